import sys

from cod.cli import main

sys.exit(main())
