"""GET /compare?names=a,b: several models' accuracies and learning curves in one answer (the dashboard's
"Compare models" panel, ``digitstream models compare`` over HTTP).

Not ``/models/compare``: "compare" is a valid model name, which ``GET /models/{name}`` must keep serving.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import FastAPI, Query

from digitstream.settings import Settings

from ..comparison import MAX_COMPARED, MetaCache, comparison, parse_names
from ..deps import RedisDep
from ..schemas import Comparison
from .responses import errors

NAMES = Query(
    max_length=MAX_COMPARED * 65,
    description=f"1 to {MAX_COMPARED} distinct model names (GET /models, or the default model), separated by commas",
    examples=["champion,challenger"],
)


def register(api: FastAPI, settings: Settings) -> None:
    tags: list[str | Enum] = ["models"]
    cache = MetaCache()

    @api.get("/compare", tags=tags, response_model=Comparison, responses=errors(404, 422, 503))
    async def compare(client: RedisDep, names: Annotated[str, NAMES]) -> dict[str, Any]:
        """Each named model's latest snapshot: rule, learning rate, stream, accuracies and learning curve.

        Reads the snapshots' metadata only: comparing loads no model and never evicts a served one.
        A registered model without a snapshot yet has ``version`` null and an empty curve.
        """
        return await comparison(client, settings, parse_names(names), cache)
