import sys

from obflow.cli import main

sys.exit(main())
