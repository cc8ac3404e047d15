import sys

from mailctl.cli import main

sys.exit(main())
