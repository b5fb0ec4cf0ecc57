"""A small asyncio SCPI client (used by the Red Pitaya importer).

The client speaks SCPI over plain TCP: commands end with ``\\r\\n``, set commands
never answer, a query answers one line (or an IEEE 488.2 definite-length binary
block), and a query that fails answers nothing at all, so every read has a timeout.
"""

from mimocorb2.scpi.client import (
    ScpiClient,
    ScpiConnectionError,
    ScpiError,
    ScpiQueryError,
    ScpiTimeout,
)
from mimocorb2.scpi.codec import (
    BlockFormatError,
    decode_ascii_list,
    decode_block_payload,
    encode_ascii_list,
    encode_block,
    parse_block,
)

__all__ = [
    "BlockFormatError",
    "ScpiClient",
    "ScpiConnectionError",
    "ScpiError",
    "ScpiQueryError",
    "ScpiTimeout",
    "decode_ascii_list",
    "decode_block_payload",
    "encode_ascii_list",
    "encode_block",
    "parse_block",
]
