import sys

from phi_demo_dev.bench.main import main

sys.exit(main())
