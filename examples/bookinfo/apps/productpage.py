"""Bookinfo's product page: ``GET /productpage`` calls details (``/details/0``) and reviews
(``/reviews/0``) and renders both, as upstream's Flask app does, with its timeouts: 3 s for
details, and for reviews two tries of 3 s each (upstream keeps that retry on purpose, for the
fault injection task). A failed call shows "Error fetching product details!" or "Error fetching
product reviews!" and the reason. The API: ``/api/v1/products``, ``/api/v1/products/<id>``,
``/api/v1/products/<id>/reviews``, ``/api/v1/products/<id>/ratings``.

The end user: upstream's page signs a user in (``POST /login``, kept in a session cookie) and
then sends ``end-user: <name>`` on its calls. Here the cookie ``user=<name>`` (``curl -b
user=jason``), or an ``end-user`` header on the request (as a gateway that authenticated the
user would send it), says who the user is. The trace headers are passed on."""

from __future__ import annotations

import html
import os
import sys
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))
from common import as_json, get_json, passed_on, serve

DETAILS = f"http://{os.environ.get('DETAILS_HOSTNAME', 'details')}:9080/details"
REVIEWS = f"http://{os.environ.get('REVIEWS_HOSTNAME', 'reviews')}:9080/reviews"
RATINGS = f"http://{os.environ.get('RATINGS_HOSTNAME', 'ratings')}:9080/ratings"
PRODUCTS = [
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">'
        "Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> "
        "early plays. It is his shortest and one of his most farcical comedies.",
    }
]
Answer = tuple[int, str, bytes]


def forward_headers(headers: dict[str, str]) -> dict[str, str]:
    """What the calls carry: the propagated headers, and ``end-user`` from the signed-in user."""
    forwarded = passed_on(headers)
    user = user_of(headers)
    if user:
        forwarded["end-user"] = user
    return forwarded


def user_of(headers: dict[str, str]) -> str:
    cookie: SimpleCookie = SimpleCookie(headers.get("cookie", ""))
    if "user" in cookie and cookie["user"].value:
        return cookie["user"].value
    return headers.get("end-user", "")


def product_details(product: str, headers: dict[str, str]) -> tuple[int, Any]:
    status, answer = get_json(f"{DETAILS}/{product}", headers, timeout=3.0)
    if status == 200:
        return 200, answer
    error = "Sorry, product details are currently unavailable for this book."
    return status or 500, {"error": error}


def product_reviews(product: str, headers: dict[str, str]) -> tuple[int, Any]:
    status = 0
    for _ in range(2):  # upstream's hard-coded retry (the fault injection task relies on it)
        status, answer = get_json(f"{REVIEWS}/{product}", headers, timeout=3.0)
        if status == 200:
            return 200, answer
    error = "Sorry, product reviews are currently unavailable for this book."
    return status or 500, {"error": error}


def product_ratings(product: str, headers: dict[str, str]) -> tuple[int, Any]:
    status, answer = get_json(f"{RATINGS}/{product}", headers, timeout=3.0)
    if status == 200:
        return 200, answer
    error = "Sorry, product ratings are currently unavailable for this book."
    return status or 500, {"error": error}


def render_review(review: dict[str, Any]) -> str:
    part = f"<blockquote><p>{html.escape(review['text'])}</p><small>{review['reviewer']}</small>"
    rating = review.get("rating") or {}
    if rating.get("stars"):
        full = '<span class="glyphicon glyphicon-star"></span>' * rating["stars"]
        empty = '<span class="glyphicon glyphicon-star-empty"></span>' * (5 - rating["stars"])
        part += f'<font color="{html.escape(rating["color"])}">{full}{empty}</font>'
    elif rating.get("error"):
        part += f"<p><i>{html.escape(rating['error'])}</i></p>"
    return part + "</blockquote>"


def page(headers: dict[str, str]) -> Answer:
    forwarded = forward_headers(headers)
    product = PRODUCTS[0]
    details_status, details = product_details("0", forwarded)
    reviews_status, reviews = product_reviews("0", forwarded)
    user = user_of(headers)
    parts = [
        "<!DOCTYPE html><html><head><title>Simple Bookstore App</title></head><body>",
        f"<p>Signed in as {html.escape(user)}</p>" if user else
        "<p>Sign in: send the cookie user=NAME</p>",
        f"<h3>{html.escape(str(product['title']))}</h3>",
        f"<p>Summary: {product['descriptionHtml']}</p>",
    ]  # fmt: skip
    if details_status == 200:
        fields = ("type", "pages", "publisher", "language", "ISBN-10", "ISBN-13")
        rows = "".join(f"<dt>{f}:</dt><dd>{html.escape(str(details[f]))}</dd>" for f in fields)
        parts.append(f"<h4>Book Details</h4><dl>{rows}</dl>")
    else:
        parts.append(f"<h4>Error fetching product details!</h4><p>{details['error']}</p>")
    if reviews_status == 200:
        parts.append("<h4>Book Reviews</h4>")
        parts += [render_review(review) for review in reviews["reviews"]]
    else:
        parts.append(f"<h4>Error fetching product reviews!</h4><p>{reviews['error']}</p>")
    parts.append("</body></html>")
    return 200, "text/html; charset=utf-8", "\n".join(parts).encode()


def productpage(method: str, path: str, headers: dict[str, str]) -> Answer:
    url = urlsplit(path)
    parts = url.path.strip("/").split("/")
    if url.path in ("/", "/index.html"):
        return 200, "text/html", b"<html><body><a href='productpage'>Normal user</a></body></html>"
    if url.path == "/productpage" and method == "GET":
        return page(headers)
    if parts[:3] == ["api", "v1", "products"]:
        forwarded = forward_headers(headers)
        if len(parts) == 3:
            return as_json(200, PRODUCTS)
        if len(parts) == 4:
            return as_json(*product_details(parts[3], forwarded))
        if len(parts) == 5 and parts[4] == "reviews":
            return as_json(*product_reviews(parts[3], forwarded))
        if len(parts) == 5 and parts[4] == "ratings":
            return as_json(*product_ratings(parts[3], forwarded))
    return as_json(404, {"error": f"no {url.path}"})


if __name__ == "__main__":
    serve("productpage", productpage)
