"""People and what they did: the vocabulary of the `who-did` task.

First names come from Faker's US census lists (well-kept, offline) and are split train/dev/test by name,
so a test answer is a name no training example ever answered. Actions are a fixed set of everyday
verb phrases, each easy to say and to hear apart from the others; a context draws three distinct ones.
"""

from __future__ import annotations

import functools

from faker.providers.person.en_US import Provider

from aura.data.splits import check_split, split_of

_VERBS = {
    "painted the": ("fence", "kitchen", "boat", "front door", "garden bench"),
    "fixed the": ("bicycle", "kitchen sink", "old radio", "roof", "clock"),
    "baked": ("the bread", "a chocolate cake", "the cookies", "an apple pie"),
    "washed the": ("car", "dishes", "dog", "windows"),
    "read": ("the newspaper", "a long letter", "the map", "a mystery novel"),
    "planted": ("the roses", "tomatoes", "an oak tree", "the tulips"),
    "cooked": ("dinner", "the soup", "the rice", "breakfast"),
    "cleaned the": ("garage", "attic", "oven", "swimming pool"),
    "sold the": ("piano", "truck", "sofa", "camera"),
    "bought": ("a kite", "new shoes", "a lamp", "fresh fish"),
    "found the": ("keys", "wallet", "missing cat", "old photos"),
    "wrote": ("a poem", "the report", "a song", "a postcard"),
    "carried the": ("boxes", "ladder", "groceries", "suitcase"),
    "opened the": ("gate", "package", "safe", "bottle of wine"),
    "fed the": ("horses", "chickens", "goldfish", "rabbits"),
    "climbed the": ("hill", "tower", "apple tree", "stone wall"),
    "built": ("a shed", "the birdhouse", "a bookshelf", "a sandcastle"),
    "drew": ("a dragon", "a castle", "the portrait", "a treasure map"),
    "caught the": ("early train", "ball", "last bus", "thief"),
    "watered the": ("lawn", "house plants", "vegetables", "sunflowers"),
}
ACTIONS: tuple[str, ...] = tuple(f"{verb} {thing}" for verb, things in _VERBS.items() for thing in things)


@functools.cache
def names_in(split: str) -> tuple[str, ...]:
    """The first names of one split, in a fixed order."""
    check_split(split)
    pool = sorted(set(Provider.first_names_female) | set(Provider.first_names_male))
    return tuple(name for name in pool if split_of(f"name:{name}") == split)
