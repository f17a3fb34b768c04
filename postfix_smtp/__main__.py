"""``python -m postfix_smtp``: the delivery agent as master(8) runs it."""

import sys

from postfix_smtp.master.server import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
