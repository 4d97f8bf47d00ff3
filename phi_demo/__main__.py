import sys

from phi_demo.cli import main

sys.exit(main())
