import sys

from experiments.dashboard.cli import main

sys.exit(main())
