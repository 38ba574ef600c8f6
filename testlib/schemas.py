"""An order schema and a payload it accepts, shared by the tests of data contracts."""

from __future__ import annotations

ORDER = {
    "type": "object",
    "required": ["amount", "currency"],
    "additionalProperties": False,
    "properties": {
        "amount": {"type": "number", "minimum": 0, "maximum": 100_000},
        "currency": {"enum": ["EUR", "USD"]},
        "coupon": {"type": "string", "pattern": "^[A-Z]{4}-[0-9]{2}$"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}},
                },
            },
        },
    },
}
GOOD = {"amount": 12.5, "currency": "EUR", "coupon": "SAVE-10", "lines": [{"sku": "A", "qty": 1}]}
