#!/usr/bin/env python3
"""Write the project's English minimal pairs (BLiMP's JSONL format), deterministically.

    python benchmarks/minimal_pairs/make_pairs.py --out model_foundry/inference/minimal_pairs

writes one `<phenomenon>.jsonl` per phenomenon (rows `{"sentence_good", "sentence_bad",
"phenomenon", "pair_id"}`), the quickstart's smoke subset `quickstart/agreement.jsonl` and the
folder's `README.md`. Every pair is drawn from hand-written templates with a seeded
`random.Random`, so the same command rewrites the same bytes.

The sentences use words that are frequent in the SST-2 movie reviews (`../shared/data/sst2/
train.tsv`) and SST-2's spelling: lowercase, punctuation and clitics split off (`the film is n't
funny .`). The quickstart subset is written as ordinary text (`The film is good.`), like the
Shakespeare plays and review snippets that the quickstart pretrains on.

    python benchmarks/minimal_pairs/make_pairs.py --check-vocab ../shared/data/sst2/train.tsv

prints how often each word of the main set occurs in that text (and fails below `--min-count`).

Only the standard library is used.
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import random
import re
import sys
from pathlib import Path
from typing import Callable

SEED = 12
PAIRS_PER_FILE = 100
QUICKSTART_PAIRS = 100
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "model_foundry" / "inference" / "minimal_pairs"
COMMAND = "python benchmarks/minimal_pairs/make_pairs.py --out model_foundry/inference/minimal_pairs"

Pair = tuple[list[str], list[str]]
Generator = Callable[[random.Random], Pair]

# ----------------------------------------------------------------------------------------------
# Vocabulary (every word occurs at least 20 times in the SST-2 training text; see --check-vocab)
# ----------------------------------------------------------------------------------------------
# Nouns as (singular, plural).
FILMS = [("film", "films"), ("movie", "movies"), ("story", "stories"), ("comedy", "comedies"),
         ("documentary", "documentaries"), ("thriller", "thrillers")]
PARTS = [("scene", "scenes"), ("performance", "performances"), ("joke", "jokes"), ("song", "songs"),
         ("moment", "moments"), ("script", "scripts"), ("plot", "plots")]
PEOPLE = [("director", "directors"), ("actor", "actors"), ("actress", "actresses"),
          ("filmmaker", "filmmakers"), ("star", "stars"), ("hero", "heroes"), ("villain", "villains"),
          ("character", "characters"), ("kid", "kids"), ("man", "men"), ("woman", "women"),
          ("fan", "fans"), ("viewer", "viewers")]
MAKERS = [("director", "directors"), ("filmmaker", "filmmakers")]
PERFORMERS = [("actor", "actors"), ("actress", "actresses"), ("star", "stars")]
# Who watches films (the critics only in the plural: "critic" is rare in SST-2).
VIEWERS = [("director", "directors"), ("actor", "actors"), ("fan", "fans"), ("kid", "kids"),
           ("viewer", "viewers"), ("filmmaker", "filmmakers"), ("man", "men"), ("woman", "women"),
           (None, "critics")]

WORK_ADJ = ["good", "bad", "long", "short", "funny", "boring", "dull", "clever", "original", "fresh",
            "slow", "beautiful", "strange", "sad", "interesting", "predictable", "entertaining",
            "charming", "silly", "stupid", "moving", "touching", "enjoyable", "flat", "tedious", "witty",
            "weak", "strong", "solid", "smart"]
PART_ADJ = ["good", "bad", "long", "funny", "boring", "dull", "clever", "original", "fresh",
            "beautiful", "strange", "sad", "predictable", "silly", "stupid", "moving", "touching", "flat",
            "weak", "strong", "witty"]
PERSON_ADJ = ["good", "bad", "funny", "smart", "clever", "young", "old", "talented", "charming",
              "strange", "interesting", "great", "boring", "silly", "stupid", "witty", "weak", "strong"]
# Attributive adjectives that begin with a consonant (so "a" never needs to be "an").
ATTR_ADJ = ["funny", "good", "great", "bad", "strange", "clever", "beautiful", "sad", "moving", "silly",
            "touching", "long", "boring", "charming", "stupid", "witty"]
INTENSIFIERS = ["very", "too", "really", "so", "pretty", "quite"]

# Objects that a film can have, lack, need, offer, ...
FILM_HAS = ["a good story", "a great cast", "a clever script", "some funny moments", "a lot of charm",
            "a sad ending", "a strong cast", "some good jokes", "a lot of heart", "no real plot"]
FILM_LACKS = ["charm", "humor", "energy", "a real plot", "heart", "depth"]
FILM_NEEDS = ["a better script", "more humor", "more energy", "more charm", "a real plot"]
FILM_DESERVES = ["an audience", "a wide audience", "a better script"]
FILM_OFFERS = ["some laughs", "a few laughs", "nothing new", "a lot of fun", "some surprises"]
FILM_FEATURES = ["a great cast", "some good performances", "a strong cast", "some funny songs"]
FEEL_ADJ = ["long", "slow", "fresh", "flat", "tedious", "original", "predictable", "silly", "cheap",
            "real", "dull", "funny", "sad"]
LOOK_ADJ = ["good", "great", "beautiful", "cheap", "strange"]


def S(*parts: str | None, end: str = ".") -> list[str]:
    """Tokens of a sentence: the parts split on spaces (empty parts dropped) and the end mark."""
    tokens = [w for part in parts if part for w in part.split()]
    return tokens + [end] if end else tokens


def pick(rng: random.Random, items):
    return items[rng.randrange(len(items))]


def noun_of(rng: random.Random, nouns, number: int) -> str:
    """A noun of `nouns` in `number` (0 singular, 1 plural), skipping ones without that form."""
    while True:
        word = pick(rng, nouns)[number]
        if word:
            return word


def be(number: int, past: bool) -> tuple[str, str]:
    """(right, wrong) forms of "be" for a subject of `number`."""
    forms = ("was", "were") if past else ("is", "are")
    return forms[number], forms[1 - number]


def agree(number: int, singular: str, plural: str) -> tuple[str, str]:
    return (singular, plural) if number == 0 else (plural, singular)


def swap(tokens: list[str], index: int, word: str) -> list[str]:
    out = list(tokens)
    out[index] = word
    return out


def pair_at(tokens: list[str], marker: str, good: str, bad: str) -> Pair:
    """The sentence with `marker` replaced by `good`, and by `bad`."""
    i = tokens.index(marker)
    return swap(tokens, i, good), swap(tokens, i, bad)


SLOT = "<>"


def work_predicate(rng: random.Random, number: int, nouns) -> tuple[list[str], str, str]:
    """A predicate for a film-like subject: (tokens with SLOT for the verb, right verb, wrong verb)."""
    kind = rng.randrange(4) if nouns is FILMS else rng.randrange(3)
    if kind == 0:  # is / are (was / were) + adjective
        right, wrong = be(number, rng.random() < 0.3)
        adj = pick(rng, WORK_ADJ if nouns is FILMS else PART_ADJ)
        intens = pick(rng, INTENSIFIERS) if rng.random() < 0.4 else None
        return S(SLOT, intens, adj, end=""), right, wrong
    if kind == 1:  # feels / feel + adjective
        right, wrong = agree(number, "feels", "feel")
        return S(SLOT, pick(rng, ["too", "very", "pretty", "so", None]), pick(rng, FEEL_ADJ), end=""), right, wrong
    if kind == 2:  # does n't / do n't work
        right, wrong = agree(number, "does", "do")
        return S(SLOT, "n't", pick(rng, ["work", "make sense", "matter", "work at all"]), end=""), right, wrong
    right, wrong = agree(number, "has", "have")  # has / have + object (films only)
    return S(SLOT, pick(rng, FILM_HAS), end=""), right, wrong


def person_predicate(rng: random.Random, number: int) -> tuple[list[str], str, str]:
    right, wrong = be(number, rng.random() < 0.3)
    adj = pick(rng, PERSON_ADJ)
    intens = pick(rng, INTENSIFIERS) if rng.random() < 0.3 and adj != "great" else None
    return S(SLOT, intens, adj, end=""), right, wrong


def with_predicate(subject: list[str], predicate: tuple[list[str], str, str]) -> Pair:
    tokens, right, wrong = predicate
    return pair_at(subject + tokens + ["."], SLOT, right, wrong)


# ----------------------------------------------------------------------------------------------
# Phenomena: each is a list of generators; a generator draws one (good, bad) pair.
# ----------------------------------------------------------------------------------------------

def sva_simple() -> list[Generator]:
    def work_be(rng):
        nouns = pick(rng, [FILMS, PARTS])
        n = rng.randrange(2)
        return with_predicate(S("the", pick(rng, nouns)[n], end=""), work_predicate(rng, n, nouns))

    def person_be(rng):
        n = rng.randrange(2)
        return with_predicate(S("the", pick(rng, PEOPLE)[n], end=""), person_predicate(rng, n))

    def film_verb(rng):
        n = rng.randrange(2)
        verb, obj = pick(rng, [(("lacks", "lack"), FILM_LACKS), (("needs", "need"), FILM_NEEDS),
                               (("deserves", "deserve"), FILM_DESERVES), (("offers", "offer"), FILM_OFFERS),
                               (("features", "feature"), FILM_FEATURES), (("looks", "look"), LOOK_ADJ),
                               (("seems", "seem"), WORK_ADJ), (("works", "work"), ["well"]),
                               (("makes", "make"), ["me laugh", "you laugh", "us laugh"])])
        right, wrong = agree(n, *verb)
        return pair_at(S("the", pick(rng, FILMS)[n], SLOT, pick(rng, obj)), SLOT, right, wrong)

    def person_verb(rng):
        n = rng.randrange(2)
        nouns, verb, obj = pick(rng, [
            (MAKERS, ("makes", "make"), ["good films", "funny movies", "strange films", "long movies"]),
            (PERFORMERS, ("gives", "give"), ["a great performance", "a good performance", "a strong performance"]),
            (PERFORMERS + MAKERS, ("deserves", "deserve"), ["a better script", "better material", "a better role"]),
            (PEOPLE, ("looks", "look"), ["good", "great", "young", "old", "strange"]),
            (PEOPLE, ("seems", "seem"), PERSON_ADJ)])
        right, wrong = agree(n, *verb)
        return pair_at(S("the", pick(rng, nouns)[n], SLOT, pick(rng, obj)), SLOT, right, wrong)

    return [work_be, person_be, film_verb, person_verb]


TOPICS = [["war", "family", "man", "woman", "director", "actor", "city", "hero"],
          ["kids", "women", "men", "actors", "fans", "children", "filmmakers", "characters"]]


def sva_pp() -> list[Generator]:
    def about(rng):  # the film about the kids is ...
        n = rng.randrange(2)
        subject = S("the", pick(rng, FILMS)[n], "about the", pick(rng, TOPICS[1 - n]), end="")
        return with_predicate(subject, work_predicate(rng, n, FILMS))

    def of(rng):  # the director of the films is ...
        n = rng.randrange(2)
        head = pick(rng, [("director", "directors"), ("star", "stars"), ("hero", "heroes"),
                          ("villain", "villains"), ("fan", "fans")])
        subject = S("the", head[n], "of the", pick(rng, FILMS)[1 - n], end="")
        return with_predicate(subject, person_predicate(rng, n))

    def in_(rng):  # the scenes in the movie are ...
        n = rng.randrange(2)
        if rng.random() < 0.7:
            subject = S("the", pick(rng, PARTS)[n], "in the", pick(rng, FILMS)[1 - n], end="")
            return with_predicate(subject, work_predicate(rng, n, PARTS))
        head = pick(rng, [("actor", "actors"), ("actress", "actresses"), ("character", "characters")])
        subject = S("the", head[n], "in the", pick(rng, FILMS)[1 - n], end="")
        return with_predicate(subject, person_predicate(rng, n))

    def with_(rng):  # the movie with the funny songs is ...
        n = rng.randrange(2)
        subject = S("the", pick(rng, FILMS)[n], "with the", pick(rng, ATTR_ADJ),
                    pick(rng, PARTS[:5] + [("character", "characters")])[1 - n], end="")
        return with_predicate(subject, work_predicate(rng, n, FILMS))

    return [about, of, in_, with_]


def sva_rc() -> list[Generator]:
    def object_rc(rng):  # the film that the critics liked is ...
        n = rng.randrange(2)
        nouns = pick(rng, [FILMS, FILMS, PARTS])
        if nouns is FILMS and rng.random() < 0.3:
            agent, verb = noun_of(rng, MAKERS, 1 - n), "made"
        else:
            agent, verb = noun_of(rng, VIEWERS, 1 - n), pick(rng, ["liked", "loved", "enjoyed"]
                                                             + (["saw"] if nouns is FILMS else []))
        subject = S("the", pick(rng, nouns)[n], "that the", agent, verb, end="")
        return with_predicate(subject, work_predicate(rng, n, nouns))

    def object_rc_person(rng):  # the actor that the kids loved is ...
        n = rng.randrange(2)
        head = pick(rng, PERFORMERS + [("character", "characters"), ("hero", "heroes"), ("villain", "villains")])
        agent = noun_of(rng, VIEWERS[1:], 1 - n)
        while agent in head:  # not "the actor that the actors loved"
            agent = noun_of(rng, VIEWERS[1:], 1 - n)
        subject = S("the", head[n], "that the", agent,
                    pick(rng, ["liked", "loved"]), end="")
        return with_predicate(subject, person_predicate(rng, n))

    def subject_rc_person(rng):  # the director who made the films is ...
        n = rng.randrange(2)
        head = pick(rng, MAKERS + PERFORMERS + [("fan", "fans"), ("kid", "kids"), ("man", "men"),
                                                 ("woman", "women"), ("viewer", "viewers")])
        verb = "made" if head in MAKERS and rng.random() < 0.5 else pick(rng, ["loved", "liked", "saw", "enjoyed"])
        subject = S("the", head[n], "who", verb, "the", pick(rng, FILMS)[1 - n], end="")
        return with_predicate(subject, person_predicate(rng, n))

    def subject_rc_film(rng):  # the comedy that made the kids laugh is ...
        n = rng.randrange(2)
        subject = S("the", pick(rng, FILMS)[n], "that made the", noun_of(rng, VIEWERS[1:], 1 - n), "laugh", end="")
        right, wrong = be(n, rng.random() < 0.3)
        intens = pick(rng, INTENSIFIERS) if rng.random() < 0.3 else None
        return pair_at(subject + S(SLOT, intens, pick(rng, WORK_ADJ)), SLOT, right, wrong)

    return [object_rc, object_rc, object_rc_person, subject_rc_person, subject_rc_film]


def det_noun() -> list[Generator]:
    subjects = [("the director", ["made", "liked", "loved", "saw"]),
                ("the filmmaker", ["made", "liked", "loved", "saw"]),
                ("the critics", ["liked", "loved", "saw", "enjoyed", "have seen"]),
                ("the audience", ["liked", "loved", "enjoyed"]),
                ("i", ["liked", "loved", "saw", "enjoyed", "have seen"]),
                ("we", ["liked", "loved", "saw", "enjoyed"]),
                ("the kids", ["liked", "loved", "saw", "enjoyed"]),
                ("many people", ["liked", "loved", "saw", "enjoyed", "have seen"])]

    def gen(rng):
        subject, verbs = pick(rng, subjects)
        verb = pick(rng, verbs)
        if verb == "made":
            nouns, adjs = FILMS + [("scene", "scenes")], ATTR_ADJ
        elif verb in ("liked", "loved") and rng.random() < 0.3:
            nouns, adjs = PERFORMERS + [("character", "characters"), ("hero", "heroes"), ("villain", "villains")], \
                ["funny", "young", "old", "charming", "strange", "clever", "silly", "talented"]
        elif verb in ("saw", "have seen"):
            nouns, adjs = FILMS + [("scene", "scenes"), ("performance", "performances")], ATTR_ADJ
        else:
            nouns, adjs = FILMS + PARTS[:5], ATTR_ADJ
        n = rng.randrange(2)
        dets = pick(rng, [("this", "these"), ("that", "those")])
        adj = pick(rng, adjs) if rng.random() < 0.5 else None
        return pair_at(S(subject, verb, SLOT, adj, pick(rng, nouns)[n]), SLOT, dets[n], dets[1 - n])

    return [gen]


def anaphor() -> list[Generator]:
    male = [("man", "men"), ("actor", "actors"), ("director", "directors"), ("hero", "heroes"),
            ("villain", "villains"), ("filmmaker", "filmmakers"), ("star", "stars")]
    plural_people = PEOPLE

    def subject(rng, animate_only=False):
        """(noun phrase, number, right reflexive, wrong reflexives)."""
        kind = rng.randrange(3) if not animate_only else 1 + rng.randrange(2)
        if kind == 0:
            return "the " + pick(rng, FILMS)[0], 0, "itself", ["himself", "themselves"]
        if kind == 1:
            noun = pick(rng, male)[0]
            # Singular "they" is fine for a person of unknown gender, so "themselves" is only wrong
            # after "the man"; otherwise the wrong reflexive is "itself".
            return "the " + noun, 0, "himself", ["themselves", "itself"] if noun == "man" else ["itself"]
        nouns = plural_people if animate_only else plural_people + FILMS
        return "the " + pick(rng, nouns)[1], 1, "themselves", ["himself", "itself"]

    def frame_seriously(rng):  # takes itself too seriously / does n't take itself seriously
        np, n, right, wrongs = subject(rng)
        if rng.random() < 0.6:
            tokens = S(np, agree(n, "takes", "take")[0], SLOT, "too seriously")
        else:
            tokens = S(np, agree(n, "does", "do")[0], "n't take", SLOT, "seriously")
        return pair_at(tokens, SLOT, right, pick(rng, wrongs))

    def frame_finds(rng):  # finds himself in trouble
        np, n, right, wrongs = subject(rng)
        person = np.split()[1] in {w for noun in PEOPLE for w in noun}
        place = pick(rng, ["in trouble", "in a bad movie", "in a strange world", "in a strange city"]) if person \
            else "in trouble"
        return pair_at(S(np, agree(n, "finds", "find")[0], SLOT, place), SLOT, right, pick(rng, wrongs))

    def frame_person(rng):  # sees himself as a hero / loves himself too much / has lost himself in the story
        np, n, right, wrongs = subject(rng, animate_only=True)
        kind = rng.randrange(3)
        if kind == 0:
            roles = [r for r in [("a hero", "heroes"), ("a star", "stars"), ("a villain", "villains")]
                     if r[1] not in np and r[0].split()[1] not in np.split()]
            rest = S(agree(n, "sees", "see")[0], SLOT, "as", pick(rng, roles)[n], end="")
        elif kind == 1:
            rest = S(agree(n, "loves", "love")[0], SLOT, pick(rng, ["too much", None]), end="")
        else:
            rest = S(agree(n, "has", "have")[0], "lost", SLOT, "in the", pick(rng, ["story", "role", "film", "plot"]), end="")
        return pair_at(S(np, end="") + rest + ["."], SLOT, right, pick(rng, wrongs))

    return [frame_seriously, frame_seriously, frame_finds, frame_person, frame_person]


INTRANSITIVE_BAD = [("happens", "happen"), ("matters", "matter"), ("comes", "come"), ("goes", "go")]


def transitive() -> list[Generator]:
    def film_present(rng):  # the film lacks charm . / the film happens charm .
        n = rng.randrange(2)
        verb, objs = pick(rng, [(("lacks", "lack"), FILM_LACKS), (("needs", "need"), FILM_NEEDS),
                                (("deserves", "deserve"), FILM_DESERVES), (("offers", "offer"), FILM_OFFERS),
                                (("features", "feature"), FILM_FEATURES)])
        return pair_at(S("the", pick(rng, FILMS)[n], SLOT, pick(rng, objs)), SLOT, verb[n],
                       pick(rng, INTRANSITIVE_BAD)[n])

    def person_present(rng):  # the director makes a new film . / the director comes a new film .
        n = rng.randrange(2)
        nouns, verb, objs = pick(rng, [
            (MAKERS, ("makes", "make"), ["a good film", "funny movies", "a new comedy", "a long documentary"]),
            (PERFORMERS, ("gives", "give"), ["a great performance", "a strong performance"]),
            (PERFORMERS, ("brings", "bring"), ["charm to the role", "energy to the role", "humor to the role"]),
            (PERFORMERS + MAKERS, ("deserves", "deserve"), ["a better script", "a better role", "better material"]),
            (PEOPLE, ("loves", "love"), ["the story", "this movie", "the script", "the film"])])
        return pair_at(S("the", pick(rng, nouns)[n], SLOT, pick(rng, objs)), SLOT, verb[n],
                       pick(rng, INTRANSITIVE_BAD)[n])

    def past(rng):  # the critics liked the film . / the critics existed the film .
        subject, verb, objs = pick(rng, [
            (pick(rng, ["the director", "the filmmaker", "the directors"]), "made", ["a new film", "a good movie", "this comedy"]),
            (pick(rng, ["the critics", "the kids", "the audience", "the fans", "i", "we"]), "liked", ["the film", "this movie", "the story", "the songs"]),
            (pick(rng, ["the critics", "the kids", "the audience", "the fans", "i", "we"]), "loved", ["the film", "this movie", "the story", "the actors"]),
            (pick(rng, ["the critics", "the kids", "the fans", "i", "we"]), "saw", ["the film", "this movie", "the new comedy"]),
            (pick(rng, ["the film", "the movie", "the story"]), "needed", ["a better script", "more humor", "more energy"])])
        return pair_at(S(subject, SLOT, pick(rng, objs)), SLOT, verb, pick(rng, ["happened", "existed", "came", "went"]))

    return [film_present, film_present, person_present, person_present, past]


def intransitive() -> list[Generator]:
    good = [("works", "work"), ("fails", "fail"), ("succeeds", "succeed"), ("drags", "drag"),
            ("matters", "matter"), ("ends", "end"), ("begins", "begin")]
    bad = [("lacks", "lack"), ("needs", "need"), ("deserves", "deserve"), ("offers", "offer"),
           ("features", "feature"), ("uses", "use"), ("brings", "bring"), ("makes", "make")]
    adverbs = {"works": ["still", "never", "really", "just", "finally", "rarely"],
               "fails": ["still", "never", "really", "just", "rarely"],
               "succeeds": ["still", "never", "really", "finally", "rarely"],
               "drags": ["never", "really", "just", "rarely"],
               "matters": ["still", "never", "really", "just"],
               "ends": ["finally", "just", "never"],
               "begins": ["finally", "just", "never"]}

    def films(rng):  # the film works . / the film lacks .
        n = rng.randrange(2)
        verb = pick(rng, good)
        adv = pick(rng, adverbs[verb[0]]) if rng.random() < 0.5 else None
        return pair_at(S("the", pick(rng, FILMS + PARTS[:3])[n], adv, SLOT), SLOT, verb[n], pick(rng, bad)[n])

    def people(rng):  # the director succeeds . / the director needs .
        n = rng.randrange(2)
        verb = pick(rng, [("succeeds", "succeed"), ("fails", "fail"), ("laughs", "laugh")])
        wrong = pick(rng, [("needs", "need"), ("deserves", "deserve"), ("makes", "make"), ("brings", "bring"),
                           ("uses", "use"), ("finds", "find"), ("wants", "want")])
        adv = pick(rng, ["still", "never", "really", "just", "finally", "rarely"]) if rng.random() < 0.5 else None
        return pair_at(S("the", pick(rng, PEOPLE)[n], adv, SLOT), SLOT, verb[n], wrong[n])

    def past(rng):  # the film worked . / the film needed .
        adv = pick(rng, ["still", "never", "really", "just", "finally", "rarely"]) if rng.random() < 0.5 else None
        n = rng.randrange(2)
        return pair_at(S("the", pick(rng, FILMS)[n], adv, SLOT), SLOT, "worked",
                       pick(rng, ["needed", "used", "made", "liked", "loved", "wanted"]))

    return [films, films, films, people, past]


def people_subject(rng, number=None) -> tuple[str, int]:
    n = rng.randrange(2) if number is None else number
    if n == 1 and rng.random() < 0.2:
        return pick(rng, ["the critics", "many people", "few people"]), 1
    return "the " + pick(rng, PEOPLE[:11])[n], n


def participle() -> list[Generator]:
    def see(rng):  # has seen / has saw
        if rng.random() < 0.6:
            np, n = people_subject(rng)
            aux = pick(rng, [agree(n, "has", "have")[0], "had"])
            obj = pick(rng, ["this film", "the movie", "the new comedy", "many films", "a lot of movies",
                             "the documentary", "this thriller"])
            return pair_at(S(np, aux, SLOT, obj), SLOT, "seen", "saw")
        n = rng.randrange(2)
        aux = pick(rng, [be(n, True)[0], be(n, False)[0], agree(n, "has been", "have been")[0]])
        agent = pick(rng, ["many people", "the critics", "few people", "the kids", "the director"])
        return pair_at(S("the", pick(rng, FILMS)[n], aux, SLOT, "by", agent), SLOT, "seen", "saw")

    def go(rng):  # has gone too far / has went too far
        if rng.random() < 0.5:
            np, n = people_subject(rng)
        else:
            n = rng.randrange(2)
            np = "the " + pick(rng, FILMS)[n]
        aux = pick(rng, [agree(n, "has", "have")[0], "had"])
        return pair_at(S(np, aux, SLOT, pick(rng, ["too far", "a bit too far", "way too far"])), SLOT, "gone", "went")

    def know(rng):  # is known for / is knew for ; has known / has knew
        n = rng.randrange(2)
        head = pick(rng, MAKERS + PERFORMERS)[n]
        if rng.random() < 0.5:
            aux = be(n, rng.random() < 0.3)[0]
            what = pick(rng, ["funny films", "strange movies", "good comedies", "long films", "sad stories",
                              "great performances", "silly comedies"])
            return pair_at(S("the", head, aux, SLOT, "for", what), SLOT, "known", "knew")
        aux = pick(rng, [agree(n, "has", "have")[0], "had"])
        other = pick(rng, ["the director", "the actors", "the star", "the filmmaker", "the kids"])
        if other == "the " + head:
            other = "the fans"
        return pair_at(S("the", head, aux, SLOT, other, "for years"), SLOT, "known", "knew")

    def do(rng):  # has done a good job / has did a good job
        np, n = people_subject(rng)
        aux = pick(rng, [agree(n, "has", "have")[0], "had"])
        obj = pick(rng, ["a good job", "a great job", "better work", "a lot of work", "something new",
                         "nothing new", "good work"])
        return pair_at(S(np, aux, SLOT, obj), SLOT, "done", "did")

    def come(rng):  # has come a long way / has came a long way
        kind = rng.randrange(3)
        if kind == 0:
            np, n = people_subject(rng)
            return pair_at(S(np, pick(rng, [agree(n, "has", "have")[0], "had"]), SLOT, "a long way"), SLOT, "come", "came")
        if kind == 1:
            n = rng.randrange(2)
            return pair_at(S("the", pick(rng, FILMS)[n], agree(n, "has", "have")[0], SLOT, "out",
                             pick(rng, [None, "at last", "on video"])), SLOT, "come", "came")
        return pair_at(S("the time", pick(rng, ["has", "had"]), SLOT, pick(rng, [None, "at last"])), SLOT, "come", "came")

    return [see, see, go, know, know, do, come]


def past_tense() -> list[Generator]:
    def see(rng):  # saw / seen
        np, _ = people_subject(rng)
        obj = pick(rng, ["this film", "the movie", "the new comedy", "the documentary", "this thriller", "the film"])
        where = pick(rng, [None, "at the festival", "last year", "in the theater", "last summer"])
        return pair_at(S(np, SLOT, obj, where), SLOT, "saw", "seen")

    def go(rng):  # went / gone
        if rng.random() < 0.5:
            np, _ = people_subject(rng)
        else:
            np = "the " + pick(rng, FILMS)[rng.randrange(2)]
        return pair_at(S(np, SLOT, pick(rng, ["too far", "a bit too far", "way too far"])), SLOT, "went", "gone")

    def know(rng):  # knew / known
        np, _ = people_subject(rng)
        obj = pick(rng, ["the story", "the ending", "the director", "the plot", "the script", "the song"])
        if np.endswith(obj.split()[-1]):
            obj = "the ending"
        return pair_at(S(np, SLOT, obj, pick(rng, [None, "too well", "by heart"])), SLOT, "knew", "known")

    def do(rng):  # did / done
        np, _ = people_subject(rng)
        obj = pick(rng, ["a good job", "a great job", "good work", "something new", "nothing new"])
        return pair_at(S(np, SLOT, obj, pick(rng, [None, "last year", "in this film"])), SLOT, "did", "done")

    def come(rng):  # came / come (singular subjects only: "the films come out" is a present tense)
        np = "the " + pick(rng, FILMS)[0]
        return pair_at(S(np, SLOT, "out", pick(rng, ["last year", "last summer", "too late", "at last"])), SLOT, "came", "come")

    return [see, see, go, know, do, come]


def npi() -> list[Generator]:
    bad_dets = ["the", "this", "every"]

    def ever(rng):  # no film has ever been so funny . / the film has ever been so funny .
        if rng.random() < 0.55:
            noun = pick(rng, FILMS)[0]
            vp = pick(rng, [S("been so", pick(rng, ["funny", "boring", "long", "moving", "silly", "dull", "tedious",
                                                        "predictable", "entertaining", "strange", "sad"]), end=""),
                            S("felt so", pick(rng, ["long", "slow", "fresh", "real", "sad"]), end=""),
                            S("looked so", pick(rng, ["good", "great", "beautiful", "cheap"]), end=""),
                            S("made me laugh so hard", end="")])
        else:
            noun = pick(rng, MAKERS + PERFORMERS)[0]
            if noun in ("director", "filmmaker"):
                vp = S("made a", pick(rng, ["better", "worse", "funnier"]), pick(rng, ["film", "movie", "comedy"]), end="")
            else:
                vp = S(pick(rng, ["given a better performance", "looked so good", "been so funny", "been so bad"]), end="")
        return pair_at(S(SLOT, noun, "has ever", " ".join(vp)), SLOT, "no", pick(rng, bad_dets))

    def any_good(rng):  # the film is n't any good . / the film is really any good .
        n = rng.randrange(2)
        verb = be(n, rng.random() < 0.4)[0]
        return pair_at(S("the", pick(rng, FILMS + PARTS[:4])[n], verb, SLOT, "any good"), SLOT,
                       pick(rng, ["n't", "not"]), pick(rng, ["really", "also", "still"]))

    def at_all(rng):  # the film is n't funny at all . / the film is very funny at all .
        n = rng.randrange(2)
        verb = be(n, rng.random() < 0.4)[0]
        adj = pick(rng, ["funny", "good", "boring", "original", "clever", "interesting", "moving", "entertaining",
                         "predictable", "charming", "fresh"])
        return pair_at(S("the", pick(rng, FILMS + PARTS[:4])[n], verb, SLOT, adj, "at all"), SLOT,
                       pick(rng, ["n't", "not"]), pick(rng, ["very", "so", "really", "also", "pretty"]))

    def yet(rng):  # the director has n't made a film yet . / the director has also made a film yet .
        n = rng.randrange(2)
        kind = rng.randrange(3)
        if kind == 0:
            np, vp = "the " + pick(rng, FILMS)[n], pick(rng, ["found an audience", "found its audience"] if n == 0 else ["found an audience"])
        elif kind == 1:
            np, vp = "the " + pick(rng, MAKERS)[n], pick(rng, ["made a good film", "made a comedy", "found a good story"])
        else:
            np, vp = "the " + pick(rng, PERFORMERS)[n], pick(rng, ["found a good role", "found the right role", "made a good movie"])
        return pair_at(S(np, agree(n, "has", "have")[0], SLOT, vp, "yet"), SLOT,
                       pick(rng, ["n't", "not"]), pick(rng, ["also", "already", "just"]))

    def never_any(rng):  # the director never made any good films . / the director also made any good films .
        kind = rng.randrange(3)
        n = rng.randrange(2)
        if kind == 0:
            np, vp = "the " + pick(rng, MAKERS)[n], S("made any", pick(rng, ["good", "funny", "great", "bad"]),
                                                          pick(rng, ["films", "movies", "comedies"]), end="")
        elif kind == 1:
            np = "the " + pick(rng, FILMS)[n]
            vp = S(agree(n, "offers", "offer")[0], "any", pick(rng, ["surprises", "laughs", "new ideas", "real laughs"]), end="")
        else:
            np = "the " + pick(rng, PERFORMERS)[n]
            vp = S(pick(rng, ["got any", "had any"]), pick(rng, ["good", "great", "funny", "real"]),
                   pick(rng, ["performances", "roles", "lines", "scenes"]), end="")
        return pair_at(S(np, SLOT, " ".join(vp)), SLOT, "never", pick(rng, ["also", "then"]))

    def no_any(rng):  # no film has any charm . / the film has any charm .
        noun = pick(rng, FILMS + [("script", "scripts")])[0]
        obj = pick(rng, ["charm", "humor", "energy", "heart", "depth", "surprises", "real laughs"])
        return pair_at(S(SLOT, noun, pick(rng, ["has", "had"]), "any", obj), SLOT, "no", pick(rng, bad_dets))

    return [ever, ever, any_good, at_all, yet, never_any, no_any]


def existential() -> list[Generator]:
    places = ["in this film", "in the movie", "in this story", "in the comedy", "in this movie", "in the film"]
    plural_nouns = [p for _, p in PARTS[:5]] + ["characters", "laughs", "surprises", "villains", "heroes", "actors"]
    places = places + ["in the story", "in this comedy"]
    singular_nouns = [s for s, _ in PARTS[:5]] + ["character", "villain", "hero"]

    def plural(rng):  # there are many scenes in this film . / there are most scenes in this film .
        # No adjective here: "most" + adjective can be the intensifier ("most enjoyable scenes").
        verb = pick(rng, ["are", "are", "were"])
        good = pick(rng, ["many", "some", "few", "several", "no", "two", "three"])
        return pair_at(S("there", verb, SLOT, pick(rng, plural_nouns), pick(rng, places)), SLOT, good, "most")

    def singular(rng):  # there is a funny scene in this film . / there is every funny scene ...
        verb = pick(rng, ["is", "is", "was"])
        adj = pick(rng, ATTR_ADJ)
        good = pick(rng, ["a", "a", "one", "no"])
        return pair_at(S("there", verb, SLOT, adj, pick(rng, singular_nouns), pick(rng, places)), SLOT,
                       good, pick(rng, ["every", "each"]))

    return [plural, plural, singular]


# Embedded clauses for filler-gap and island pairs: (subject, verb, objects); every verb needs an object.
def clause(rng) -> tuple[str, str, list[str], str]:
    """(subject, verb, objects, wh-word for the object)."""
    n = rng.randrange(2)
    kind = rng.randrange(6)
    if kind <= 2:
        verb, objs = pick(rng, [(("lacks", "lack"), FILM_LACKS), (("needs", "need"), FILM_NEEDS),
                                (("deserves", "deserve"), FILM_DESERVES), (("offers", "offer"), FILM_OFFERS)])
        return "the " + pick(rng, FILMS)[n], verb[n], objs, "what"
    if kind == 3:
        return "the " + pick(rng, MAKERS)[n], "made", ["a good film", "a new comedy", "this movie", "a long documentary"], "what"
    if kind == 4:
        return pick(rng, ["the audience", "the kids", "the critics", "the fans"]), pick(rng, ["liked", "loved"]), \
            ["the script", "the story", "the songs", "the ending"], "what"
    return pick(rng, ["the audience", "the kids", "the critics", "the fans"]), pick(rng, ["liked", "loved"]), \
        ["the actress", "the villain", "the hero", "the director"], "who"


def filler_gap() -> list[Generator]:
    matrices = ["i know", "we know", "you know", "the critics know", "the audience knows", "the director knows",
                "everyone knows", "the critics knew", "everyone knew", "you can see", "i understand",
                "we can see", "the director knew"]

    def drawn(rng):
        """A matrix clause and an embedded clause that share no noun ("the director knew that the
        kids loved the director" reads oddly)."""
        while True:
            matrix = pick(rng, matrices)
            subject, verb, objs, wh = clause(rng)
            objs = [o for o in objs if o.split()[-1] not in matrix.split()]
            if subject.split()[-1] not in matrix.split() and objs:
                return matrix, subject, verb, objs, wh

    def with_gap(rng):  # i know what the film lacks . / i know that the film lacks .
        matrix, subject, verb, _, wh = drawn(rng)
        return pair_at(S(matrix, SLOT, subject, verb), SLOT, wh, "that")

    def no_gap(rng):  # i know that the film lacks charm . / i know what the film lacks charm .
        matrix, subject, verb, objs, wh = drawn(rng)
        return pair_at(S(matrix, SLOT, subject, verb, pick(rng, objs)), SLOT, "that", wh)

    return [with_gap, no_gap]


def wh_island() -> list[Generator]:
    matrices = [("does", "the director", "think"), ("do", "you", "think"), ("did", "the critics", "say"),
                ("does", "the audience", "think"), ("do", "the critics", "say"), ("did", "you", "say"),
                ("do", "people", "say"), ("does", "everyone", "think"), ("do", "you", "believe"),
                ("did", "the director", "say"), ("do", "the fans", "think"), ("did", "the actors", "say")]

    def gen(rng):  # what do you think that the film lacks ? / what do you think whether the film lacks ?
        aux, subject, verb = pick(rng, matrices)
        e_subject, e_verb, _, wh = clause(rng)
        if e_subject == subject:
            e_subject = "the kids" if subject != "the kids" else "the fans"
        return pair_at(S(wh, aux, subject, verb, SLOT, e_subject, e_verb, end="?"), SLOT, "that",
                       pick(rng, ["whether", "whether", "why"]))

    return [gen]


def modal() -> list[Generator]:
    modals = ["will", "can", "could", "should", "may", "might", "must", "would"]

    def gen(rng):  # the film will make you laugh . / the film will makes you laugh .
        kind = rng.randrange(6)
        n = rng.randrange(2)
        if kind == 0:
            subject, verb, rest = "the " + pick(rng, FILMS)[n], ("make", "makes", "made"), pick(rng, ["you laugh", "me laugh", "us laugh", "you cry"])
        elif kind == 1:
            subject = pick(rng, ["the kids", "many people", "the fans", "audiences", "viewers", "you", "the critics"])
            verb = pick(rng, [("love", "loves", "loved"), ("enjoy", None, "enjoyed"), ("like", None, "liked")])
            rest = pick(rng, ["this film", "this movie", "the story", "this comedy", "the songs"])
        elif kind == 2:
            subject, verb, rest = "the " + pick(rng, MAKERS)[n], ("make", "makes", "made"), pick(rng, ["a new film", "a better movie", "a funny comedy"])
        elif kind == 3:
            subject, verb, rest = "the " + pick(rng, FILMS)[n], ("work", "works", "worked"), pick(rng, [None, "well", "for kids"])
        elif kind == 4:
            subject, verb, rest = "the " + pick(rng, FILMS)[n], ("find", "finds", "found"), "an audience"
        else:
            subject, verb, rest = pick(rng, ["you", "everyone", "the kids", "fans", "people"]), \
                ("see", "sees", "saw"), pick(rng, ["this film", "this movie", "the new comedy", "the documentary"])
        wrong = pick(rng, [w for w in verb[1:] if w])
        return pair_at(S(subject, pick(rng, modals), SLOT, rest), SLOT, verb[0], wrong)

    return [gen]


PHENOMENA: dict[str, tuple[Callable[[], list[Generator]], str]] = {
    "subject_verb_agreement_simple": (sva_simple, "A verb agrees in number with its subject (is/are, was/were, has/have, does/do, -s)."),
    "subject_verb_agreement_across_prepositional_phrase": (sva_pp, "Agreement with the head noun across a prepositional phrase whose noun has the other number."),
    "subject_verb_agreement_across_relative_clause": (sva_rc, "Agreement with the head noun across an object or subject relative clause with a noun of the other number."),
    "determiner_noun_agreement": (det_noun, "this/that go with a singular noun, these/those with a plural one (with or without an adjective between)."),
    "anaphor_agreement": (anaphor, "A reflexive agrees with its antecedent in number and animacy (itself, himself, themselves)."),
    "argument_structure_transitive": (transitive, "A transitive verb takes the object; an intransitive one (happen, matter, come, go, exist) cannot."),
    "argument_structure_intransitive": (intransitive, "An intransitive verb stands alone; a verb that needs an object (lack, need, offer, ...) cannot."),
    "irregular_past_participle": (participle, "After has/have/had and in the passive, the participle (seen, gone, known, done, come), not the simple past."),
    "irregular_past_tense": (past_tense, "A finite past verb is the simple past (saw, went, knew, did, came), not the participle."),
    "npi_licensing": (npi, "Negative polarity items (ever, any, at all, yet) need a licensor such as no, not, n't or never."),
    "existential_there_quantifiers": (existential, "There-sentences take weak quantifiers (a, no, many, some, few, two), not strong ones (every, each, most)."),
    "filler_gap_wh_vs_that": (filler_gap, "An embedded wh-word needs a gap in its clause; the complementizer that needs none."),
    "wh_island": (wh_island, "A wh-word can leave a that-clause but not a whether- or why-clause."),
    "verb_form_after_modal": (modal, "A modal (will, can, should, ...) takes the bare verb, not the -s or past form."),
}


# ----------------------------------------------------------------------------------------------
# The quickstart's smoke subset: ordinary text (capital letter, period attached).
# ----------------------------------------------------------------------------------------------
QS_NOUNS = [("film", "films"), ("movie", "movies"), ("story", "stories"), ("actor", "actors"),
            ("character", "characters"), ("scene", "scenes"), ("performance", "performances")]
QS_ADJ = ["good", "bad", "long", "funny", "great", "dull", "sad"]
QS_PERSON_ADJ = ["good", "bad", "funny", "great", "dull"]


def quickstart_generators() -> list[Generator]:
    def sva(rng):  # The film is good. / The film are good.
        n = rng.randrange(2)
        noun = pick(rng, QS_NOUNS)[n]
        kind = rng.randrange(3)
        if kind < 2:
            right, wrong = be(n, kind == 1)
            adjs = QS_ADJ if noun in {w for pair in QS_NOUNS[:3] + QS_NOUNS[5:] for w in pair} else QS_PERSON_ADJ
            tokens = ["The", noun, SLOT, pick(rng, adjs) + "."]
        else:
            right, wrong = agree(n, "has", "have")
            noun = pick(rng, QS_NOUNS[:3])
            thing = pick(rng, [w for w in ("story", "ending", "plot") if w != noun[0]])
            tokens = ["The", noun[n], SLOT, "a", pick(rng, ["good", "great", "sad", "bad"]), thing + "."]
        return pair_at(tokens, SLOT, right, wrong)

    def det(rng):  # I liked this film. / I liked these film.
        n = rng.randrange(2)
        dets = pick(rng, [("this", "these"), ("that", "those")])
        subject = pick(rng, ["I liked", "I loved", "We saw", "I saw", "We loved"])
        adj = pick(rng, QS_ADJ if subject.endswith("saw") else ["good", "great", "funny", "sad"]) if rng.random() < 0.4 else None
        noun = pick(rng, QS_NOUNS)[n] + "."
        return pair_at(S(subject, SLOT, adj, noun, end=""), SLOT, dets[n], dets[1 - n])

    return [sva, det]


# ----------------------------------------------------------------------------------------------

def draw(generators: list[Generator], count: int, rng: random.Random) -> list[Pair]:
    """`count` distinct pairs, taking the generators in turn; no sentence appears twice in a file."""
    pairs, seen, turn, misses = [], set(), 0, 0
    while len(pairs) < count:
        good, bad = generators[turn % len(generators)](rng)
        turn += 1
        g, b = " ".join(good), " ".join(bad)
        if g in seen or b in seen:
            misses += 1
            if misses > 100_000:
                raise RuntimeError(f"the templates give fewer than {count} distinct pairs")
            continue
        check_minimal(good, bad)
        seen.update((g, b))
        pairs.append((good, bad))
    return pairs


def check_minimal(good: list[str], bad: list[str]) -> None:
    """Every pair has the same number of words and differs in exactly one of them."""
    if len(good) != len(bad) or sum(a != b for a, b in zip(good, bad)) != 1 or SLOT in good + bad:
        raise AssertionError(f"not a minimal pair: {' '.join(good)!r} / {' '.join(bad)!r}")


def rows(name: str, pairs: list[Pair]) -> list[dict]:
    return [{"sentence_good": " ".join(g), "sentence_bad": " ".join(b), "phenomenon": name, "pair_id": i}
            for i, (g, b) in enumerate(pairs)]


def write_jsonl(path: Path, data: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in data:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build(seed: int = SEED, pairs: int = PAIRS_PER_FILE) -> tuple[dict[str, list[dict]], list[dict]]:
    files = {}
    for name, (make, _) in PHENOMENA.items():
        files[name] = rows(name, draw(make(), pairs, random.Random(f"{seed}:{name}")))
    quick = rows("agreement", draw(quickstart_generators(), QUICKSTART_PAIRS, random.Random(f"{seed}:quickstart")))
    return files, quick


def readme(files: dict[str, list[dict]], quick: list[dict], seed: int) -> str:
    total = sum(len(r) for r in files.values())
    lines = [
        "# English minimal pairs",
        "",
        "Minimal pairs in BLiMP's format that the project writes itself, for",
        "`foundry eval RUN --minimal-pairs model_foundry/inference/minimal_pairs`: one JSONL file per",
        "phenomenon, each row `{\"sentence_good\": ..., \"sentence_bad\": ..., \"phenomenon\": ..., \"pair_id\": N}`.",
        "A model gets a pair right when it scores the good sentence strictly higher.",
        "",
        "The two sentences of a pair have the same number of words and differ in exactly one word; the good",
        "one is grammatical, the bad one is not (not merely implausible). The words are frequent in the SST-2",
        "movie reviews (`../shared/data/sst2/train.tsv`: every word of these files occurs there at least 20",
        "times) and the sentences follow SST-2's spelling: lowercase, punctuation and clitics split off",
        "(`the film is n't funny .`), so that models pretrained on that text see familiar words.",
        "",
        f"| file | phenomenon | pairs | example (good / bad) |",
        "|---|---|---|---|",
    ]
    for name, data in files.items():
        ex = data[0]
        lines.append(f"| `{name}.jsonl` | {PHENOMENA[name][1]} | {len(data)} | "
                     f"{ex['sentence_good']} / *{ex['sentence_bad']}* |")
    lines += [
        f"| **all** | | **{total}** | |",
        "",
        "## Quickstart subset",
        "",
        f"`quickstart/agreement.jsonl` ({len(quick)} pairs): subject-verb and determiner-noun agreement only,",
        "with words common in the movie-review snippets that `foundry quickstart` pretrains on besides the",
        "Shakespeare plays (film, movie, story, actor, scene, good, funny, is/are, this/these, ...), written as",
        "ordinary text (capital letter, period attached) like that corpus, e.g.",
        f"`{quick[0]['sentence_good']}` / `{quick[0]['sentence_bad']}` and",
        f"`{quick[1]['sentence_good']}` / `{quick[1]['sentence_bad']}`. It lives in a subfolder, so passing",
        "this folder to `--minimal-pairs` (every `*.jsonl` directly in it) leaves it out; pass",
        "`quickstart/agreement.jsonl` itself to use it.",
        "",
        "## How the files were made",
        "",
        "All files here (and this README) are written by",
        "",
        f"    {COMMAND}",
        "",
        f"from hand-written templates in `benchmarks/minimal_pairs/make_pairs.py`, with `random.Random` seeded",
        f"per file from `--seed` ({seed}); running it again rewrites the same bytes. The script checks that",
        "every pair differs in exactly one word and that no sentence repeats within a file.",
        "",
        "    python benchmarks/minimal_pairs/make_pairs.py --check-vocab ../shared/data/sst2/train.tsv",
        "",
        "counts every word of the main files in SST-2's text and fails if one occurs fewer than",
        "`--min-count` (20) times.",
        "",
        "Notes on the templates: collective nouns (audience, cast) are never subjects of an agreement pair;",
        "`critics` appears only in the plural (`critic` is rare in SST-2); `herself` is rare in SST-2, so",
        "anaphor pairs contrast number and animacy (itself / himself / themselves), and `themselves` counts",
        "as wrong for a singular antecedent only after `the man` (singular *they* is fine for a person of",
        "unknown gender). Plural there-sentences have no adjective, since `most` before one can be the",
        "intensifier (`most enjoyable scenes`). Verbs that must not take an object (happen, matter, come, go,",
        "exist) and verbs that must (lack, need, deserve, offer, feature, use, bring, make) were chosen so",
        "that no pair hinges on an idiom or on plausibility.",
        "",
    ]
    return "\n".join(lines)


def words_of(text: str) -> list[str]:
    return re.findall(r"n't|[a-z]+(?:'[a-z]+)?|'[a-z]+", text.lower())


def check_vocab(paths: list[Path], files: dict[str, list[dict]], min_count: int, quickstart: bool) -> int:
    counts: collections.Counter = collections.Counter()
    for path in paths:
        with path.open(encoding="utf-8") as f:
            if path.suffix == ".tsv":
                reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                header = next(reader)
                col = header.index("sentence") if "sentence" in header else 0
                for row in reader:
                    if len(row) > col:
                        counts.update(words_of(row[col]))
            else:
                for line in f:
                    counts.update(words_of(line))
    used: collections.Counter = collections.Counter()
    for data in files.values():
        for row in data:
            used.update(words_of(row["sentence_good"]) + words_of(row["sentence_bad"]))
    ranked = sorted(used, key=lambda w: (counts[w], w))
    print(f"{len(used)} distinct words in {'the quickstart subset' if quickstart else 'the minimal pairs'}; "
          f"corpus: {', '.join(map(str, paths))} ({sum(counts.values())} words)")
    print("rarest: " + ", ".join(f"{w} ({counts[w]})" for w in ranked[:15]))
    rare = [w for w in ranked if counts[w] < min_count]
    if rare:
        print(f"below {min_count}: " + ", ".join(f"{w} ({counts[w]})" for w in rare))
        return 1
    print(f"every word occurs at least {min_count} times")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--pairs", type=int, default=PAIRS_PER_FILE, help="pairs per phenomenon")
    parser.add_argument("--check-vocab", type=Path, nargs="+", metavar="CORPUS",
                        help="instead of writing, count the words of the pairs in these texts (.tsv: its sentence column)")
    parser.add_argument("--quickstart", action="store_true", help="with --check-vocab: check the quickstart subset")
    parser.add_argument("--min-count", type=int, default=20)
    args = parser.parse_args(argv)

    files, quick = build(args.seed, args.pairs)
    if args.check_vocab:
        return check_vocab(args.check_vocab, {"agreement": quick} if args.quickstart else files,
                           args.min_count, args.quickstart)
    for name, data in files.items():
        write_jsonl(args.out / f"{name}.jsonl", data)
    write_jsonl(args.out / "quickstart" / "agreement.jsonl", quick)
    (args.out / "README.md").write_text(readme(files, quick, args.seed), encoding="utf-8")
    print(f"wrote {len(files)} files, {sum(len(d) for d in files.values())} pairs, and quickstart/agreement.jsonl "
          f"({len(quick)} pairs) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
