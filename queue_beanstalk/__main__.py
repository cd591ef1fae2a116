"""``python -m queue_beanstalk``: the ``queue-beanstalk`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
