"""Start the phi-demo chat app: `python app.py --help` lists every flag."""

import os

if os.environ.get("SPACES_ZERO_GPU"):
    import spaces  # noqa: F401 - ZeroGPU must patch torch before anything touches CUDA

from phi_demo.server import main

if __name__ == "__main__":
    main()
