"""US places for synthetic addresses and phone numbers.

A compact hand-made table: real cities with their state, a real 3-digit ZIP prefix and
real area codes, weighted roughly by population. Street names are the most common US
street names. Good enough that an address looks and parses like a real one; nobody lives
at any of them on purpose.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    name: str
    state: str
    zip3: str
    area_codes: tuple[str, ...]
    weight: float


CITIES: tuple[City, ...] = (
    City("New York", "NY", "100", ("212", "646", "917"), 8.3),
    City("Brooklyn", "NY", "112", ("718", "347"), 2.6),
    City("Buffalo", "NY", "142", ("716",), 0.3),
    City("Rochester", "NY", "146", ("585",), 0.2),
    City("Los Angeles", "CA", "900", ("213", "323", "310"), 3.9),
    City("San Diego", "CA", "921", ("619", "858"), 1.4),
    City("San Jose", "CA", "951", ("408", "669"), 1.0),
    City("San Francisco", "CA", "941", ("415", "628"), 0.9),
    City("Fresno", "CA", "937", ("559",), 0.5),
    City("Sacramento", "CA", "958", ("916",), 0.5),
    City("Oakland", "CA", "946", ("510",), 0.4),
    City("Chicago", "IL", "606", ("312", "773"), 2.7),
    City("Springfield", "IL", "627", ("217",), 0.1),
    City("Houston", "TX", "770", ("713", "832", "281"), 2.3),
    City("San Antonio", "TX", "782", ("210",), 1.4),
    City("Dallas", "TX", "752", ("214", "469", "972"), 1.3),
    City("Austin", "TX", "787", ("512", "737"), 1.0),
    City("El Paso", "TX", "799", ("915",), 0.7),
    City("Fort Worth", "TX", "761", ("817", "682"), 0.9),
    City("Phoenix", "AZ", "850", ("602", "480", "623"), 1.6),
    City("Tucson", "AZ", "857", ("520",), 0.5),
    City("Philadelphia", "PA", "191", ("215", "267"), 1.6),
    City("Pittsburgh", "PA", "152", ("412",), 0.3),
    City("Jacksonville", "FL", "322", ("904",), 0.9),
    City("Miami", "FL", "331", ("305", "786"), 0.5),
    City("Tampa", "FL", "336", ("813",), 0.4),
    City("Orlando", "FL", "328", ("407", "321"), 0.3),
    City("Columbus", "OH", "432", ("614",), 0.9),
    City("Cleveland", "OH", "441", ("216",), 0.4),
    City("Cincinnati", "OH", "452", ("513",), 0.3),
    City("Charlotte", "NC", "282", ("704", "980"), 0.9),
    City("Raleigh", "NC", "276", ("919",), 0.5),
    City("Indianapolis", "IN", "462", ("317",), 0.9),
    City("Seattle", "WA", "981", ("206",), 0.7),
    City("Spokane", "WA", "992", ("509",), 0.2),
    City("Denver", "CO", "802", ("303", "720"), 0.7),
    City("Washington", "DC", "200", ("202",), 0.7),
    City("Boston", "MA", "021", ("617", "857"), 0.7),
    City("Worcester", "MA", "016", ("508",), 0.2),
    City("Nashville", "TN", "372", ("615",), 0.7),
    City("Memphis", "TN", "381", ("901",), 0.6),
    City("Detroit", "MI", "482", ("313",), 0.6),
    City("Grand Rapids", "MI", "495", ("616",), 0.2),
    City("Portland", "OR", "972", ("503", "971"), 0.6),
    City("Las Vegas", "NV", "891", ("702", "725"), 0.6),
    City("Louisville", "KY", "402", ("502",), 0.6),
    City("Baltimore", "MD", "212", ("410", "443"), 0.6),
    City("Milwaukee", "WI", "532", ("414",), 0.6),
    City("Albuquerque", "NM", "871", ("505",), 0.5),
    City("Oklahoma City", "OK", "731", ("405",), 0.6),
    City("Tulsa", "OK", "741", ("918",), 0.4),
    City("Kansas City", "MO", "641", ("816",), 0.5),
    City("St. Louis", "MO", "631", ("314",), 0.3),
    City("Atlanta", "GA", "303", ("404", "678", "470"), 0.5),
    City("Savannah", "GA", "314", ("912",), 0.1),
    City("Omaha", "NE", "681", ("402",), 0.5),
    City("Minneapolis", "MN", "554", ("612",), 0.4),
    City("New Orleans", "LA", "701", ("504",), 0.4),
    City("Baton Rouge", "LA", "708", ("225",), 0.2),
    City("Honolulu", "HI", "968", ("808",), 0.3),
    City("Anchorage", "AK", "995", ("907",), 0.3),
    City("Salt Lake City", "UT", "841", ("801", "385"), 0.2),
    City("Boise", "ID", "837", ("208",), 0.2),
    City("Birmingham", "AL", "352", ("205",), 0.2),
    City("Little Rock", "AR", "722", ("501",), 0.2),
    City("Des Moines", "IA", "503", ("515",), 0.2),
    City("Wichita", "KS", "672", ("316",), 0.4),
    City("Jackson", "MS", "392", ("601",), 0.2),
    City("Richmond", "VA", "232", ("804",), 0.2),
    City("Virginia Beach", "VA", "234", ("757",), 0.4),
    City("Newark", "NJ", "071", ("973", "862"), 0.3),
    City("Jersey City", "NJ", "073", ("201",), 0.3),
    City("Hartford", "CT", "061", ("860",), 0.1),
    City("Providence", "RI", "029", ("401",), 0.2),
    City("Manchester", "NH", "031", ("603",), 0.1),
    City("Burlington", "VT", "054", ("802",), 0.05),
    City("Portland", "ME", "041", ("207",), 0.07),
    City("Charleston", "SC", "294", ("843",), 0.15),
    City("Columbia", "SC", "292", ("803",), 0.15),
    City("Charleston", "WV", "253", ("304",), 0.05),
    City("Wilmington", "DE", "198", ("302",), 0.07),
    City("Fargo", "ND", "581", ("701",), 0.1),
    City("Sioux Falls", "SD", "571", ("605",), 0.2),
    City("Billings", "MT", "591", ("406",), 0.1),
    City("Cheyenne", "WY", "820", ("307",), 0.06),
    City("San Juan", "PR", "009", ("787", "939"), 0.3),
)

STREETS: tuple[str, ...] = (
    "Main",
    "Oak",
    "Pine",
    "Maple",
    "Cedar",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Park",
    "Walnut",
    "Sunset",
    "Lincoln",
    "Jackson",
    "Church",
    "River",
    "Highland",
    "Willow",
    "Meadow",
    "Franklin",
    "Jefferson",
    "Madison",
    "Ridge",
    "Spring",
    "Forest",
    "Chestnut",
    "Center",
    "Adams",
    "Mill",
    "Dogwood",
    "Magnolia",
    "Hickory",
    "Sycamore",
    "Birch",
    "Lakeview",
    "Valley",
    "Cherry",
    "Broad",
    "Market",
    "Union",
    "Locust",
    "Poplar",
    "Martin Luther King Jr",
    "Second",
    "Third",
    "Fourth",
    "Fifth",
    "Sixth",
    "Seventh",
    "College",
    "School",
    "Academy",
    "Grove",
    "Prospect",
    "Summit",
    "Woodland",
    "Hillcrest",
)
STREET_TYPES: tuple[tuple[str, str], ...] = (
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Road", "Rd"),
    ("Drive", "Dr"),
    ("Lane", "Ln"),
    ("Court", "Ct"),
    ("Boulevard", "Blvd"),
    ("Place", "Pl"),
    ("Way", "Way"),
    ("Circle", "Cir"),
    ("Terrace", "Ter"),
)
EMAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "aol.com",
    "icloud.com",
    "comcast.net",
    "example.org",
)

_CUMULATIVE: tuple[float, ...] = tuple(
    sum(city.weight for city in CITIES[: i + 1]) for i in range(len(CITIES))
)


def _ri(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def city_index(u: float) -> int:
    """Index into CITIES of the city at population quantile u (0 <= u < 1)."""
    position = bisect.bisect_right(_CUMULATIVE, u * _CUMULATIVE[-1])
    return min(position, len(CITIES) - 1)


def cities_in(state: str) -> tuple[int, ...]:
    return tuple(i for i, city in enumerate(CITIES) if city.state == state)


def draw_street_line(rng: random.Random) -> str:
    number = rng.choice((_ri(rng, 1, 99), _ri(rng, 100, 9999), _ri(rng, 100, 29999)))
    street = rng.choice(STREETS)
    kind = STREET_TYPES[rng.randrange(len(STREET_TYPES))][0]
    return f"{number} {street} {kind}"


def draw_unit(rng: random.Random) -> str:
    return (
        rng.choice(("Apt", "Apt", "Unit", "#", "Suite"))
        + f" {_ri(rng, 1, 40)}"
        + (rng.choice(("", "", "A", "B", "C")))
    )


def draw_zip(rng: random.Random, city: City) -> str:
    return f"{city.zip3}{_ri(rng, 1, 99):02d}"


def draw_phone(rng: random.Random, city: City) -> str:
    """A US number in E.164 with a real area code; exchanges avoid N11 and 555."""
    area = rng.choice(city.area_codes)
    while True:
        exchange = _ri(rng, 200, 999)
        if exchange % 100 != 11 and exchange != 555:
            break
    return f"+1{area}{exchange}{_ri(rng, 0, 9999):04d}"


def abbreviate_street(line: str) -> str:
    """'12 Oak Street' -> '12 Oak St': how the same address is often typed elsewhere."""
    for full, short in STREET_TYPES:
        if line.endswith(" " + full):
            return line[: -len(full)] + short
    return line
