import sys

from bnspec.cli import main

sys.exit(main())
