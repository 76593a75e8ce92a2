"""The planted facts of the session-memory benchmarks: bench/memory.py plants them in a conversation and asks
for them back after N unrelated turns; bench/memory_latency.py times the same first turns through the Engine.
"""

from __future__ import annotations

import random
import re

SYSTEM = "You are a helpful assistant. Answer briefly."
NAMES = ["Priya Raman", "Tomasz Nowak", "Amara Okafor", "Lucía Fernández", "Kenji Watanabe", "Ingrid Solberg",
         "Mateo Rossi", "Hannah Becker", "Omar Haddad", "Chloé Martin", "Sven Lindqvist", "Aisha Karimi",
         "Diego Alvarez", "Mei Chen", "Rafael Costa", "Nadia Petrova"]
CITIES = ["Lisbon", "Rotterdam", "Tampere", "Valencia", "Krakow", "Porto", "Ghent", "Bergen", "Leeds", "Graz",
          "Malmo", "Bologna", "Cork", "Lyon", "Brno", "Aarhus"]
CHANNELS = {"email": r"e-?mail", "phone": r"phone|call", "SMS": r"\bsms\b|text", "WhatsApp": r"whatsapp",
            "post": r"\bpost\b|\bmail\b|letter"}
PLANTS = [
    "Hi, my name is {name}, my order id is {order}, and I prefer {channel} for contact. I live in {city}.",
    "Hello! I'm {name}. Some context before my questions: my order number is {order}, I live in {city}, and "
    "please reach me by {channel}.",
    "{name} here. My order id is {order}. I'm based in {city} and I'd rather be contacted by {channel}.",
    "Hey, this is {name} from {city}. For the record my order id is {order} and I prefer {channel}.",
]
ACK = "Thanks, noted. How can I help you today?"


def fact_sets(n: int, seed: int = 6) -> list[dict[str, str]]:
    rng = random.Random(seed)
    names, cities = rng.sample(NAMES, n), rng.sample(CITIES, n)
    return [{"name": names[i], "order": f"ORD-{rng.randint(10000, 99999)}", "channel": rng.choice(list(CHANNELS)),
             "city": cities[i], "plant": PLANTS[i % len(PLANTS)]} for i in range(n)]


def recalled(kind: str, fs: dict[str, str], answer: str) -> bool:
    if kind == "channel":  # the planted channel and no other: "email, phone or social media" is a guess
        return all((re.search(rx, answer, re.I) is not None) == (ch == fs["channel"]) for ch, rx in CHANNELS.items())
    return fs[kind].lower() in answer.lower()
