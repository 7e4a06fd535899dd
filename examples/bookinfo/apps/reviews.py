"""Bookinfo's reviews service: ``GET /reviews/<id>`` answers two reviews. As upstream's (a Java
app built three ways), ``ENABLE_RATINGS`` and ``STAR_COLOR`` make the versions: v1 shows no
stars and never calls ratings; v2 (black) and v3 (red) call ``ratings:9080/ratings/<id>``,
passing the trace and ``end-user`` headers on, with upstream's timeouts (10 s for black, 2.5 s
for red), and say "Ratings service is currently unavailable" when that call fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import as_json, get_json, passed_on, serve

RATINGS_ENABLED = os.environ.get("ENABLE_RATINGS", "false").lower() == "true"
STAR_COLOR = os.environ.get("STAR_COLOR", "black")
RATINGS_TIMEOUT = 10.0 if STAR_COLOR == "black" else 2.5
RATINGS = f"http://{os.environ.get('RATINGS_HOSTNAME', 'ratings')}:9080/ratings"
TEXTS = {
    "Reviewer1": "An extremely entertaining play by Shakespeare. The slapstick humour is "
    "refreshing!",
    "Reviewer2": "Absolutely fun and entertaining. The play lacks thematic depth when compared "
    "to other plays by Shakespeare.",
}


def reviews(method: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    parts = path.split("?", maxsplit=1)[0].strip("/").split("/")
    if method != "GET" or len(parts) != 2 or parts[0] != "reviews" or not parts[1].isdigit():
        return as_json(404, {"error": f"no {path}"})
    product = parts[1]
    stars: dict[str, int] = {}
    if RATINGS_ENABLED:
        status, answer = get_json(f"{RATINGS}/{product}", passed_on(headers), RATINGS_TIMEOUT)
        if status == 200 and isinstance(answer, dict):
            stars = answer.get("ratings", {})
    found = []
    for reviewer, text in TEXTS.items():
        review: dict[str, object] = {"reviewer": reviewer, "text": text}
        if RATINGS_ENABLED:
            if reviewer in stars:
                review["rating"] = {"stars": stars[reviewer], "color": STAR_COLOR}
            else:
                review["rating"] = {"error": "Ratings service is currently unavailable"}
        found.append(review)
    podname = os.environ.get("TULLE_REPLICA", "")
    return as_json(200, {"id": product, "podname": podname, "reviews": found})


if __name__ == "__main__":
    serve("reviews", reviews)
