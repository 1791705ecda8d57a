"""Synthetic merchant data generator for the raw landing zone.

Writes merchants, products, transactions, reviews and attachments exactly as
``DATA_CONTRACT.md`` describes, plus ``labels.json`` with the injected events,
re-delivered records and prompt-injection attempts that evals look for::

    from pipelines.synthetic import GenerateConfig, generate

    summary = generate(GenerateConfig(merchants=5, days=60, out=Path("data/landing")))
"""

from .config import DEFAULT_END_DATE, GenerateConfig, GenerateSummary
from .generator import GENERATOR_NAME, LABELS_FILE, generate, is_generator_output

__all__ = [
    "DEFAULT_END_DATE",
    "GENERATOR_NAME",
    "LABELS_FILE",
    "GenerateConfig",
    "GenerateSummary",
    "generate",
    "is_generator_output",
]
