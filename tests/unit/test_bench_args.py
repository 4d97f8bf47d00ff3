"""The benchmark's arguments, checked before anything is measured."""

import pytest

from phi_demo_dev.bench.main import main


def test_unknown_sections_are_refused_at_once(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--sections", "quantum,reuse"])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert "unknown section(s) quantum; known: prefill, reuse, voice, soak, live, file, fair, fast, quant, api" in err
    assert "stream/raw" not in out  # nothing was measured
