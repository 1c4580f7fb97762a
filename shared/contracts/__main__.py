"""``python -m shared.contracts``: check the checked-in event schemas, or ``--write`` them.

Writing refuses while a change is breaking, so refreshing the files cannot paper over an
incompatible change that needs a new schema version.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shared.contracts import check, incompatibilities, write_schemas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.contracts",
        description="Check the event schemas under shared/contracts/schemas against the models.",
    )
    parser.add_argument(
        "--write", action="store_true", help="rewrite the schema files from the models"
    )
    arguments = parser.parse_args(argv)
    if arguments.write:
        if problems := incompatibilities():
            print(*problems, sep="\n", file=sys.stderr)
            print("schemas not written", file=sys.stderr)
            return 1
        for path in write_schemas():
            print(f"wrote {path}")
        return 0
    if problems := check():
        print(*problems, sep="\n", file=sys.stderr)
        return 1
    print("contracts up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
