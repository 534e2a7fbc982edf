"""Scorers and answer normalisation against hand-computed values on records in the Hub's formats."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llava_fa.evaluation.normalize import (
    normalize_gqa_answer,
    normalize_vqa_answer,
    parse_mme_answer,
    parse_option_letter,
    parse_pope_answer,
)
from llava_fa.evaluation.scorers import score_gqa, score_mme, score_pope, score_scienceqa, score_vqa, vqa_accuracy
from llava_fa.evaluation.tasks import TASKS, get_task, scienceqa_prompt, textvqa_prompt


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"), ("No.", "no"), ("No, there is not.", "no"), ("no", "no"),
    ("There is no cat", "no"), ("I do not see one", "no"), ("Yes. No.", "yes"),
    ("Yes, there is a dog.", "yes"), ("", "yes"), ("Not really.", "yes"),  # LLaVA only knows "No", "no", "not"
    ("Nope", "yes"), ("no, a cat", "no"),
])
def test_pope_parsing_follows_llava(text, expected):
    assert parse_pope_answer(text) == expected


def _pope_records():
    # lmms-lab/POPE fields: id, question_id, question, answer, image_source, image, category
    rows = [("adversarial", "yes"), ("adversarial", "yes"), ("adversarial", "no"), ("adversarial", "no"),
            ("random", "yes"), ("random", "no"), ("random", "no")]
    return [{"id": str(i), "question_id": str(100 + i), "question": "Is there a dog in the image?", "answer": a,
             "image_source": f"COCO_val2014_{i:012d}", "category": c} for i, (c, a) in enumerate(rows)]


def test_pope_per_category_then_averaged():
    preds = ["Yes", "No.", "No, there is not.", "Yes, there is a dog.",   # adversarial: TP FN TN FP
             "There is a cat", "I do not see one", "no"]                    # random: TP TN TN
    scores = score_pope(_pope_records(), preds)
    adv, rnd = scores["per_category"]["adversarial"], scores["per_category"]["random"]
    assert (adv["tp"], adv["fn"], adv["tn"], adv["fp"]) == (1, 1, 1, 1)
    assert adv["accuracy"] == adv["precision"] == adv["recall"] == adv["f1"] == adv["yes_ratio"] == 0.5
    assert (rnd["tp"], rnd["fn"], rnd["tn"], rnd["fp"]) == (1, 0, 2, 0)
    assert rnd["accuracy"] == rnd["precision"] == rnd["recall"] == rnd["f1"] == 1.0
    assert rnd["yes_ratio"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.75)
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["yes_ratio"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert scores["n"] == 7


def test_pope_yes_ratio_counts_predictions_not_labels_and_no_dot_is_an_answer():
    records = [{"question_id": str(i), "answer": a, "category": "popular"} for i, a in enumerate(["yes", "no", "yes", "no"])]
    scores = score_pope(records, ["Yes.", "Yes.", "Yes.", "No."])
    # lmms-eval would give yes_ratio 0.5 (labels) and treat "No." as a non-answer.
    assert scores["yes_ratio"] == 0.75
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == 1.0
    assert scores["accuracy"] == 0.75
    assert scores["f1"] == pytest.approx(0.8)


def test_pope_zero_division_and_bad_labels():
    records = [{"answer": "no", "category": "random"}, {"answer": "no", "category": "random"}]
    scores = score_pope(records, ["no", "no"])
    assert scores["precision"] == 0.0 and scores["recall"] == 0.0 and scores["f1"] == 0.0
    assert scores["accuracy"] == 1.0 and scores["yes_ratio"] == 0.0
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        score_pope([{"answer": "maybe"}], ["yes"])
    with pytest.raises(ValueError, match="pair up"):
        score_pope(records, ["no"])
    with pytest.raises(ValueError, match=r"lack field\(s\) \['answer'\]"):
        score_pope([{"label": "no"}], ["no"])
    with pytest.raises(TypeError, match="str"):
        score_pope(records, ["no", 1])


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"), ("No", "no"), ("Yes.", "yes"), ("yes, it is", "yes"), ("nope", "no"), ("none", "no"),
    ("maybe", "other"), ("The answer is no", "other"), ("  NO  ", "no"),
])
def test_mme_parsing_follows_the_official_script(text, expected):
    assert parse_mme_answer(text) == expected


def test_mme_acc_plus_and_parts():
    # lmms-lab/MME fields: question_id (the image, shared by its 2 questions), image, question, answer, category
    records = [
        {"question_id": "existence/1.png", "question": "Is there a dog? Please answer yes or no.", "answer": "Yes", "category": "existence"},
        {"question_id": "existence/1.png", "question": "Is there a cat? Please answer yes or no.", "answer": "No", "category": "existence"},
        {"question_id": "existence/2.png", "question": "Is there a car? Please answer yes or no.", "answer": "Yes", "category": "existence"},
        {"question_id": "existence/2.png", "question": "Is there a bus? Please answer yes or no.", "answer": "No", "category": "existence"},
        {"question_id": "code_reasoning/0020.png", "question": "Is the output 3? Please answer yes or no.", "answer": "Yes", "category": "code_reasoning"},
        {"question_id": "code_reasoning/0020.png", "question": "Is the output 4? Please answer yes or no.", "answer": "No", "category": "code_reasoning"},
    ]
    preds = ["Yes", "No", "No", "No", "yes, it is", "maybe"]
    scores = score_mme(records, preds)
    ex, code = scores["per_category"]["existence"], scores["per_category"]["code_reasoning"]
    assert (ex["acc"], ex["acc_plus"], ex["score"]) == (75.0, 50.0, 125.0)
    assert (code["acc"], code["acc_plus"], code["score"]) == (50.0, 0.0, 50.0)
    assert scores["perception_score"] == 125.0 and scores["cognition_score"] == 50.0
    assert scores["total_score"] == 175.0 and scores["incomplete_images"] == 0
    cut = score_mme(records[:3], preds[:3])  # what --limit 3 leaves: image 2 has one question
    assert cut["incomplete_images"] == 1 and cut["per_category"]["existence"]["acc_plus"] == 50.0
    with pytest.raises(ValueError, match="Unknown MME category 'vibes'"):
        score_mme([{**records[0], "category": "vibes"}], ["Yes"])


def test_mme_category_names_accept_the_hub_spelling():
    scores = score_mme([{"question_id": "OCR/1.jpg", "answer": "Yes", "category": "OCR"},
                        {"question_id": "OCR/1.jpg", "answer": "No", "category": "OCR"}], ["Yes", "No"])
    assert scores["perception_score"] == 200.0 and scores["cognition_score"] == 0.0


def test_gqa_exact_match_after_llava_normalisation():
    assert normalize_gqa_answer(" Yes. ") == "yes"
    records = [{"id": f"q{i}", "imageId": "n1", "question": "?", "answer": a} for i, a in enumerate(["yes", "left", "table", "blue"])]
    scores = score_gqa(records, ["Yes.", " left ", "The table", "red."])
    assert scores == {"accuracy": 0.5, "n": 4}


@pytest.mark.parametrize("text, expected", [
    ("Two dogs.", "2 dogs"), ("The Left-Hand", "left hand"), ("It's", "it 's"), ("dont", "don't"),
    ("3.5", "3.5"), ("yes!", "yes"), ("10,000", "10000"), ("a  cat\n", "cat"), ("None", "0"),
    ("coca-cola, inc", "coca cola inc"), ("R&B", "r&b"),
])
def test_vqa_normalisation(text, expected):
    assert normalize_vqa_answer(text) == expected


def test_vqa_accuracy_leave_one_out():
    answers = ["two", "two", "2"] + ["3"] * 7
    assert vqa_accuracy("2", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)  # 0.9
    assert vqa_accuracy("three", answers) == 1.0
    assert vqa_accuracy("4", answers) == 0.0
    assert vqa_accuracy("A dog.", ["dog"] + ["cat"] * 9) == pytest.approx(0.3)
    # VizWiz's original annotation format: {"answer", "answer_confidence"}
    assert vqa_accuracy("dog", [{"answer": "dog", "answer_confidence": "yes"}] * 10) == 1.0
    with pytest.raises(ValueError, match="human answers"):
        vqa_accuracy("dog", ["dog"])


def test_textvqa_and_vizwiz_records():
    # lmms-lab/textvqa fields (subset): image_id, question_id, question, answers (10), ocr_tokens
    records = [{"image_id": "a", "question_id": 1, "question": "what brand?", "answers": ["nokia"] * 10, "ocr_tokens": ["nokia"]},
               {"image_id": "b", "question_id": 2, "question": "what year?", "answers": ["1990"] * 2 + ["1991"] * 8, "ocr_tokens": []}]
    scores = score_vqa(records, ["Nokia.", "1990"])
    assert scores["accuracy"] == pytest.approx((1.0 + (2 * 1 / 3 + 8 * 2 / 3) / 10) / 2)
    assert textvqa_prompt(records[0]) == ("what brand?\nReference OCR token: nokia\n"
                                          "Answer the question using a single word or phrase.")
    assert textvqa_prompt(records[1]) == "what year?\nAnswer the question using a single word or phrase."


@pytest.mark.parametrize("text, n, expected", [
    ("B", 2, 1), ("C. c", 3, 2), ("The answer is A.", 2, 0), ("E", 4, -1), ("b", 2, -1), ("AB", 2, -1),
    ("", 2, -1), ("Answer: B", 2, -1), ("The answer is B", 3, 1), (" A ", 2, 0),
])
def test_option_letter_parsing_follows_llava(text, n, expected):
    assert parse_option_letter(text, n) == expected


def test_scienceqa_scores_and_prompt():
    # lmms-lab/ScienceQA (ScienceQA-IMG) fields: image, question, choices, answer (index), hint, ...
    records = [{"question": "Which?", "choices": ["cat", "dog"], "answer": 1, "hint": ""},
               {"question": "Which?", "choices": ["a", "b", "c"], "answer": 2, "hint": "Look."},
               {"question": "Which?", "choices": ["x", "y"], "answer": 0, "hint": ""},
               {"question": "Which?", "choices": ["p", "q", "r", "s"], "answer": 3, "hint": ""}]
    scores = score_scienceqa(records, ["B", "C. c", "The answer is A.", "E"])
    assert scores == {"accuracy": 0.75, "n": 4, "unparsed": 1}
    assert scienceqa_prompt(records[1]) == ("Context: Look.\nWhich?\nA. a\nB. b\nC. c\n"
                                            "Answer with the option's letter from the given choices directly.")
    with pytest.raises(ValueError, match="n_choices"):
        parse_option_letter("A", 6)


def test_task_registry():
    assert {"pope", "mme", "gqa", "textvqa", "vizwiz", "scienceqa_img"} <= set(TASKS)
    assert get_task("POPE") is TASKS["pope"]
    assert TASKS["pope_adversarial"].category == "adversarial" and TASKS["pope_adversarial"].folder == "pope"
    with pytest.raises(ValueError, match="Unknown task 'mmbench'.*pope"):
        get_task("mmbench")
    with pytest.raises(TypeError, match="task name"):
        get_task(3)
    for spec in TASKS.values():
        assert spec.main_metric and spec.hub_repo.startswith("lmms-lab/")


def test_importing_the_package_is_light():
    code = ("import sys, llava_fa.evaluation as e; assert 'pope' in e.TASKS; e.score_pope; "
            "bad = [m for m in ('lmms_eval', 'torch', 'datasets', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
