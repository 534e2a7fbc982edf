"""Answer normalisation and parsing rules of the official evaluation scripts.

Pure Python, no dependencies. Each function reproduces one published rule:

* :func:`normalize_vqa_answer`: the VQA / EvalAI answer processor (as used by TextVQA's and
  VizWiz's official evaluation and LLaVA's ``m4c_evaluator.py``): lowercase, drop "," and "?",
  strip punctuation, number words to digits, drop articles, restore contractions.
* :func:`parse_pope_answer`: LLaVA's ``eval_pope.py``: keep the first sentence, drop commas, an
  answer with the word "No", "no" or "not" is *no*, anything else is *yes*.
* :func:`parse_mme_answer`: the official MME ``calculation.py``: lowercase, "yes"/"no", else look
  for "yes" then "no" in the first 4 characters, else "other".
* :func:`normalize_gqa_answer`: LLaVA's ``convert_gqa_for_eval.py``: strip, drop trailing ".",
  lowercase (then exact match).
* :func:`parse_option_letter`: LLaVA's ``eval_science_qa.py``: a bare letter, "X. ...", or
  "The answer is X", else not parsed.
"""

from __future__ import annotations

import re

__all__ = [
    "normalize_vqa_answer",
    "parse_pope_answer",
    "parse_mme_answer",
    "normalize_gqa_answer",
    "parse_option_letter",
    "OPTION_LETTERS",
]

# Tables of the VQA answer processor (VQA API vqaEval.py / EvalAI / MMF): data, not logic.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!"]
# A period that is not part of a number ("3.5" keeps its period). The reference pattern is written
# "(?!<=\d)" (a typo for a look-behind), so it only protects periods followed by a digit; kept as is.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA = re.compile(r"(?<=\d)(,)+(?=\d)")


def _strip_punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        # Punctuation next to a space (or any text with a digit-separating comma) is deleted,
        # otherwise it becomes a space ("left-hand" -> "left hand").
        if (p + " " in text or " " + p in text) or _DIGIT_COMMA.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The reference passes re.UNICODE (32) as `count`: at most 32 periods are removed.
    return _PERIOD_STRIP.sub("", out, count=32)


def normalize_vqa_answer(answer: str) -> str:
    """The VQA/EvalAI answer processor: ``"Two dogs."`` -> ``"2 dogs"``, ``"The Left-Hand"`` -> ``"left hand"``."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}.")
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _strip_punctuation(text)
    words = []
    for word in text.lower().split():
        word = _NUMBERS.get(word, word)
        if word not in _ARTICLES:
            words.append(word)
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def parse_pope_answer(prediction: str) -> str:
    """LLaVA's POPE parsing: ``"no"`` if the first sentence has the word No/no/not, else ``"yes"``.

    Every answer is counted: an empty or off-topic answer is *yes* (LLaVA's rule).
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}.")
    text = prediction.split(".")[0] if "." in prediction else prediction
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def parse_mme_answer(prediction: str) -> str:
    """The official MME rule: ``"yes"``, ``"no"`` or ``"other"`` (never counted as correct)."""
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}.")
    text = prediction.strip().lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def normalize_gqa_answer(answer: str) -> str:
    """LLaVA's GQA conversion: strip whitespace, drop trailing periods, lowercase."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}.")
    return answer.strip().rstrip(".").lower()


OPTION_LETTERS = "ABCDE"
_OPTION_DOT = re.compile(r"^([A-E])\. ")
_ANSWER_IS = re.compile(r"The answer is ([A-E])")


def parse_option_letter(prediction: str, n_choices: int) -> int:
    """LLaVA's ScienceQA parsing: the chosen option's index in ``range(n_choices)``, or -1.

    Accepted: a bare letter (``"B"``), a letter then ". " (``"B. cat"``), or ``"The answer is B"``.
    A letter beyond the number of choices is not parsed (-1).
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}.")
    if not 1 <= n_choices <= len(OPTION_LETTERS):
        raise ValueError(f"n_choices must be in 1..{len(OPTION_LETTERS)}, got {n_choices}.")
    text = prediction.replace("\n", ". ")
    letter = None
    if text.strip() in tuple(OPTION_LETTERS):
        letter = text.strip()
    elif (m := _OPTION_DOT.match(text)) is not None:
        letter = m.group(1)
    elif (m := _ANSWER_IS.search(text)) is not None:
        letter = m.group(1)
    if not letter:
        return -1
    index = OPTION_LETTERS.index(letter)
    return index if index < n_choices else -1
