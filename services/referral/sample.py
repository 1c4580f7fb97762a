"""The fictional county of Wessexshire: its postcode table and its directory of local
services, for demonstrations and tests. Loaded only with ``EARLYHELP_SAMPLE_DATA=true``; a
council's own come from ``EARLYHELP_POSTCODE_DISTRICTS_FILE`` and
``EARLYHELP_DIRECTORY_FILE``."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files

from services.referral.directory import DIRECTORY, DirectoryService

POSTCODE_DISTRICTS: Mapping[str, str] = {
    # outward code -> district
    **{f"WX{n}": "northvale" for n in range(1, 6)},
    **{f"WX{n}": "eastmere" for n in range(6, 11)},
    **{f"WX{n}": "southford" for n in range(11, 16)},
    **{f"WX{n}": "westbrook" for n in range(16, 21)},
}


def load_sample_directory() -> list[DirectoryService]:
    """The sample directory, packaged with the service in ``data/directory.json``."""
    data = files("services.referral").joinpath("data/directory.json").read_bytes()
    return DIRECTORY.validate_json(data)
