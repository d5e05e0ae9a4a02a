import sys

from relaycast.cli import main

sys.exit(main())
