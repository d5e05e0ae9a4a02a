import sys

from relaycast.cli.main import main

sys.exit(main())
