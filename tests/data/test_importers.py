"""Importers: promptsource, Super-NaturalInstructions, Flan CoT, T0-rendered files, local files; the registry
folders they write; golden renders against T0's own renders and hand-written expectations; bad input."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from flanmix.cli import main as cli
from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import YamlDoc
from flanmix.importers import files as files_importer
from flanmix.importers import flan_cot, import_shared, niv2, promptsource, register, t0, write_registry
from flanmix.registry import Registry, unregister_task
from flanmix.task import Example, Task
from flanmix.templates import make_environment

PASSAGE = "Persian (Farsi) is a member of the Western Iranian group of the Iranian languages."
# Realistic rows for every dataset the shared promptsource files cover, with the fields the hub dataset has.
ROWS: dict[str, list[dict]] = {
    "ag_news": [{"text": "Wall St. Bears Claw Back Into the Black (Reuters) Short-sellers are seeing green again.",
                 "label": 2}],
    "ai2_arc/ARC-Challenge": [{
        "id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster after a meteorite "
        "impact. Which is the most likely effect of this increase in rotation?",
        "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.",
                             "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                    "label": ["A", "B", "C", "D"]}, "answerKey": "C"}],
    "anli": [{"uid": "0fd0abfb", "premise": "The Parma trolleybus system forms part of the public transport network "
              "of the city of Parma.", "hypothesis": "The trolleybus system has over 2 urban routes.", "label": 0,
              "reason": ""}],
    "app_reviews": [{"package_name": "com.mantz_it.rfanalyzer", "review": "Great app! The new version works.",
                     "date": "October 12 2016", "star": 4}],
    "common_gen": [{"concept_set_idx": 0, "concepts": ["ski", "mountain", "skier"],
                    "target": "Skier skis down the mountain"}],
    "commonsense_qa": [{"id": "075e483d21c29a511267ef62bedc0461",
                        "question": "The sanctions against the school were a punishing blow, and they seemed to what "
                        "the efforts the school had made to change?", "question_concept": "punishing",
                        "choices": {"label": ["A", "B", "C", "D", "E"],
                                    "text": ["ignore", "enforce", "authoritarian", "yell at", "avoid"]},
                        "answerKey": "A"}],
    "cosmos_qa": [{"id": "3Q9SPIIRWJKVQ8244310E8TUS6YWAC##34V1S5K3GTZMDUBNBIGY93FLDPB690##A1S1K7134S2VUC##Blog",
                   "context": "Good Old War and person L : I saw both of these bands Wednesday night.",
                   "question": "In the future , will this person go to see other bands play ?",
                   "answer0": "None of the above choices .", "answer1": "This person likes music .",
                   "answer2": "This person only likes Good Old War .", "answer3": "Other Bands is not on tour .",
                   "label": 1}],
    "dbpedia_14": [{"label": 0, "title": "E. D. Abbott Ltd",
                    "content": " Abbott of Farnham E D Abbott Limited was a British coachbuilding business."}],
    "glue/mrpc": [{"sentence1": "Amrozi accused his brother of deliberately distorting his evidence .",
                   "sentence2": "Referring to him as only \" the witness \" , Amrozi accused his brother .",
                   "label": 1, "idx": 0},
                  {"sentence1": "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 .",
                   "sentence2": "Yucaipa bought Dominick 's in 1995 for $ 693 million .", "label": 0, "idx": 1}],
    "glue/qqp": [{"question1": "How is the life of a math student?", "question2": "Which level of prepration is "
                  "enough for the exam jlpt5?", "label": 0, "idx": 0}],
    "glue/sst2": [{"sentence": "hide new secretions from the parental units ", "label": 0, "idx": 0}],
    "hellaswag": [{"ind": 4, "activity_label": "Removing ice from car",
                   "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing "
                   "winter clothes smiles.", "ctx_b": "then",
                   "ctx": "Then, the man writes over the snow covering the window of a car, and a woman wearing "
                   "winter clothes smiles. then",
                   "endings": [", the man adds wax to the windshield and cuts it.",
                               ", a person board a ski lift, while two men supporting the head of the person.",
                               ", the man puts on a christmas coat, knitted with netting.",
                               ", the man continues removing the snow on his car."],
                   "source_id": "activitynet~v_-1IBHYS3L-Y", "split": "train", "split_type": "indomain",
                   "label": "3"}],
    "imdb": [{"text": "I rented I AM CURIOUS-YELLOW from my video store because of all the controversy.", "label": 0},
             {"text": "A wonderful little production.", "label": 1}],
    "piqa": [{"goal": "When boiling butter, when it's ready, you can",
              "sol1": "Pour it onto a plate", "sol2": "Pour it into a jar", "label": 1}],
    "qasc": [{"id": "3E7TUJ2EGCLQNOV1WEAJ2NN9ROPD9K", "question": "What type of water formation is formed by "
              "clouds?", "choices": {"text": ["pearls", "streams", "shells", "diamonds", "rain", "beads", "cooled",
                                              "liquid"], "label": ["A", "B", "C", "D", "E", "F", "G", "H"]},
              "answerKey": "F", "fact1": "beads of water are formed by water vapor condensing",
              "fact2": "Clouds are made of water vapor.",
              "combinedfact": "Beads of water can be formed by clouds.",
              "formatted_question": "What type of water formation is formed by clouds? (A) pearls (B) streams"}],
    "rotten_tomatoes": [{"text": "the rock is destined to be the 21st century's new \" conan \" .", "label": 1}],
    "samsum": [{"id": "13818513", "dialogue": "Amanda: I baked  cookies. Do you want some?\r\nJerry: Sure!",
                "summary": "Amanda baked cookies and will bring Jerry some tomorrow."}],
    "social_i_qa": [{"context": "Cameron decided to have a barbecue and gathered her friends together.",
                     "question": "How would Others feel as a result?", "answerA": "like attending",
                     "answerB": "like staying home", "answerC": "a good friend to have", "label": "1"}],
    "super_glue/boolq": [{"question": "do iran and afghanistan speak the same language", "passage": PASSAGE,
                          "idx": 0, "label": 1}],
    "super_glue/cb": [{"premise": "It was a complex language. Not written down but handed down.",
                       "hypothesis": "the language was peeled down", "idx": 0, "label": 0}],
    "super_glue/copa": [{"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
                         "choice2": "The grass was cut.", "question": "cause", "idx": 0, "label": 0},
                        {"premise": "The elderly woman suffered a stroke.", "choice1": "The woman's daughter came "
                         "over to clean her house.", "choice2": "The woman's daughter moved in to take care of her.",
                         "question": "effect", "idx": 1, "label": 1}],
    "super_glue/rte": [{"premise": "No Weapons of Mass Destruction Found in Iraq Yet.",
                        "hypothesis": "Weapons of Mass Destruction Found in Iraq.", "idx": 0, "label": 1}],
    "super_glue/wic": [{"word": "place", "sentence1": "Do you want to come over to my place later?",
                        "sentence2": "A political system with no place for the less prominent groups.",
                        "start1": 31, "start2": 27, "end1": 36, "end2": 32, "idx": 0, "label": 0}],
    "trec": [{"text": "How did serfdom develop in and then leave Russia ?", "coarse_label": 2, "fine_label": 26}],
    "winogrande/winogrande_xl": [{"sentence": "Ian volunteered to eat Dennis's menudo after already having a bowl "
                                  "because _ despised eating intestine.", "option1": "Ian", "option2": "Dennis",
                                  "answer": "2"}],
    "xsum": [{"document": "The full cost of damage in Newton Stewart is still being assessed.\nRepair work is "
              "ongoing in Hawick.", "summary": "Clean-up operations are continuing across the Scottish Borders.",
              "id": "35232142"}],
}
RANDOM = re.compile(r"\|\s*choice\b")
# The reference renderer: our sandbox plus the `zip` global promptsource's environment has.
REFERENCE_ENV = make_environment()
REFERENCE_ENV.globals["zip"] = zip


def _norm(text: str) -> str:
    return " ".join(text.split())


def _ps_files(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "templates" / "promptsource").rglob("templates.yaml"))


def _key(data: dict) -> str:
    return data["dataset"] + (f"/{data['subset']}" if data.get("subset") else "")


@functools.cache
def _compile_reference(source: str):
    return REFERENCE_ENV.from_string(source)


def _reference(template: dict, row: dict) -> list[str]:
    """promptsource's own semantics, independently: options rendered and split, whole jinja rendered, split."""
    context = dict(row)
    if template.get("answer_choices"):
        rendered = _compile_reference(template["answer_choices"]).render(row)
        context["answer_choices"] = [c.strip() for c in rendered.split("|||")]
    return [part.strip() for part in _compile_reference(template["jinja"]).render(context).split("|||")]


@pytest.fixture(scope="module")
def ps_items(shared_data) -> dict[Path, list]:
    """file -> imported (spec, template set) pairs, for every shared promptsource file."""
    return {path: promptsource.import_file(path, notes=[]) for path in _ps_files(shared_data)}


@pytest.fixture(scope="module")
def ps_tasks(ps_items) -> dict[str, tuple[str, dict[str, Task]]]:
    """dataset key -> (file, {template name: task}) for every shared promptsource file."""
    out = {}
    for path, items in ps_items.items():
        by_name = {}
        for spec, templates in items:
            task = Task(spec, templates)
            for i, tmpl in enumerate(templates.zero_shot):
                by_name[tmpl.name] = (task, i)
        out[_key(YamlDoc.read(path).data)] = (str(path), by_name)
    return out


def _render(task: Task, idx: int, row: dict, variant: str = "zs_noopt", n: int = 0) -> dict:
    return task.render(Example(f"row{n}", row), template_type=variant, template_idx=idx)


# ------------------------------------------------------------------------------------------------ promptsource

def test_promptsource_every_file_imports_and_every_template_renders(shared_data, ps_tasks):
    files = _ps_files(shared_data)
    assert len(files) == 26
    total = sum(len(YamlDoc.read(p).data["templates"]) for p in files)
    assert total == 236
    imported = rendered = compared = 0
    for key, (file, by_name) in ps_tasks.items():
        assert key in ROWS, f"no sample rows for {key}"
        originals = {t["name"]: t for t in YamlDoc.read(file).data["templates"].values()}
        for name, (task, idx) in by_name.items():
            imported += 1
            tmpl = task.templates.zero_shot[idx]
            for n, row in enumerate(ROWS[key]):
                row_noopt = _render(task, idx, row, "zs_noopt", n)
                row_opt = _render(task, idx, row, "zs_opt", n)
                if RANDOM.search(originals[name]["jinja"]) is None:
                    reference = _reference(originals[name], row)
                    if len(reference) < 2 or not reference[1]:
                        # promptsource skips this row for this template (e.g. paraphrase only when label == 1).
                        assert row_noopt["targets"] == "", name
                        continue
                    # The zs_noopt render is exactly promptsource's render of the whole template, split at |||.
                    assert [row_noopt["inputs"], row_noopt["targets"]] == reference, name
                    compared += 1
                assert row_noopt["inputs"] and row_noopt["targets"], (file, name)
                if RANDOM.search(originals[name]["jinja"]) is None:
                    # (a template drawing at random may draw differently per variant: each variant is seeded apart)
                    assert row_opt["targets"] == row_noopt["targets"]
                if tmpl.options and originals[name]["metadata"].get("choices_in_prompt") is not True:
                    assert "OPTIONS:" in row_opt["inputs"] and "OPTIONS:" not in row_noopt["inputs"], name
                rendered += 2
    # 3 templates reuse an input-side random draw in their target: skipped until the core shares the draw.
    assert imported == 236 - (0 if promptsource.parts_share_random_draws() else 3)
    assert compared >= 240 and rendered >= 2 * imported


def test_promptsource_task_layout(shared_data):
    items = promptsource.import_file(shared_data / "templates/promptsource/hellaswag/templates.yaml", notes=[])
    names = [spec.name for spec, _ in items]
    assert names == ["ps.hellaswag", "ps.hellaswag.alt"]
    spec, templates = items[0]
    assert spec.source.hub == "hellaswag" and spec.source.split == "train" and spec.source.config is None
    assert spec.cluster == "sentence_completion" and spec.collection == "promptsource"
    assert spec.metrics == ["exact_match", "rank_classification"]
    assert {t.name for t in templates.zero_shot} == {"complete_first_then", "Randomized prompts template",
                                                     "Predict ending with hint", "if_begins_how_continues"}
    alt = items[1][1]
    assert "Open-ended start" in {t.name for t in alt.zero_shot}
    rte, _ = promptsource.import_file(shared_data / "templates/promptsource/super_glue/rte/templates.yaml")[0]
    assert (rte.name, rte.source.hub, rte.source.config, rte.cluster) == ("ps.super_glue.rte", "super_glue", "rte",
                                                                           "nli")


def test_promptsource_split_and_prelude():
    assert promptsource.split_source('{{ a | join(" ||| ") }} x ||| {{ y }}') == ['{{ a | join(" ||| ") }} x ',
                                                                                  " {{ y }}"]
    template = {"name": "t", "jinja": "{% set n = label + 1 %}{% set m = 2 %}Q {{ n }} ||| {{ n * 10 }}",
                "answer_choices": None, "metadata": {"original_task": True}}
    spec, original = promptsource.convert_template(template)
    assert original and spec.target.startswith("{% set n = label + 1 %}")
    task = Task(promptsource.TaskSpec(name="x", cluster="c", source={"builtin": "b"}, templates="x"),
                promptsource.TemplateSet(zero_shot=[spec]))
    row = task.render(Example("e", {"label": 2}))
    assert (row["inputs"], row["targets"]) == ("Q 3", "30")
    # A '|||' inside a Jinja block cannot be split in the source: it is split after rendering instead.
    block = {"name": "b", "jinja": "{% if label %}yes ||| 1{% else %}no ||| 0{% endif %}", "metadata": {}}
    spec, _ = promptsource.convert_template(block)
    task = Task(promptsource.TaskSpec(name="y", cluster="c", source={"builtin": "b"}, templates="y"),
                promptsource.TemplateSet(zero_shot=[spec]))
    assert [task.render(Example("e", {"label": v}))["targets"] for v in (1, 0)] == ["1", "0"]


def test_promptsource_label_minus_one_renders_empty_target(ps_tasks):
    """Unlabelled rows (test splits) render an empty target; imported tasks read the train split, which has labels."""
    task, idx = ps_tasks["super_glue/boolq"][1]["GPT-3 Style"]
    row = _render(task, idx, dict(ROWS["super_glue/boolq"][0], label=-1))
    assert row["inputs"] and row["targets"] == ""


def test_promptsource_missing_field_is_an_error(ps_tasks):
    task, idx = ps_tasks["super_glue/rte"][1]["GPT-3 style"]
    with pytest.raises(FlanmixError, match="undefined"):
        _render(task, idx, {"premise": "p", "label": 0})


def _golden_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        assert row["completion"].endswith("<|endoftext|>")
        row["completion"] = row["completion"][: -len("<|endoftext|>")]
    return rows


def _between(text: str, pattern: str) -> re.Match:
    match = re.fullmatch(pattern, text, re.S)
    assert match, (pattern, text[:200])
    return match


# Reconstruct the raw row from a T0 prompt/completion (file stem -> (dataset key, template name, parser)).
def _rt(p, c, choices=("negative", "positive")):
    return {"text": _between(p, r"(.*) The sentiment expressed for the movie is\n").group(1),
            "label": choices.index(c)}


def _imdb(p, c):
    return {"text": _between(p, r"(.*) Did the reviewer enjoy the movie\?\n").group(1), "label": ["No", "Yes"].index(c)}


def _ag(p, c):
    m = _between(p, r"(.*) \nIs this a piece of news regarding world politics, sports, business, or science and "
                    r"technology\?\n")
    return {"text": m.group(1),
            "label": ["World politics", "Sports", "Business", "Science and technology"].index(c)}


def _mrpc(p, c):
    m = _between(p, r'Are the following two sentences "equivalent" or "not equivalent"\?\n(.*)\n(.*)\n')
    return {"sentence1": m.group(1), "sentence2": m.group(2), "label": ["not equivalent", "equivalent"].index(c)}


def _qqp(p, c):
    m = _between(p, r'(.*?)\n(.*)\nPick one: These questions are "duplicates" or "not duplicates".\n')
    return {"question1": m.group(1), "question2": m.group(2), "label": ["not duplicates", "duplicates"].index(c)}


def _samsum(p, c):
    return {"dialogue": _between(p, r"Generate a summary for this dialogue:\n(.*)\n").group(1), "summary": c}


def _xsum(p, c):
    return {"document": _between(p, r"(.*)\n\nTL;DR:\n").group(1), "summary": c}


def _common_gen(p, c):
    m = _between(p, r"Given the list of concepts: (.*); \nGenerate a sentence with all the concepts :\n")
    return {"concepts": m.group(1).split(", "), "target": c}


def _app(p, c):
    m = _between(p, r'What would be the ★-rating of this review \(★ being the lowest and ★★★★★ being the highest\)\? '
                    r'"(.*)"\n')
    return {"review": m.group(1), "star": len(c)}


DBPEDIA = ["Company", "Educational Institution", "Artist", "Athlete", "Office Holder", "Mean Of Transportation",
           "Building", "Natural Place", "Village", "Animal", "Plant", "Album", "Film", "Written Work"]


def _dbpedia(p, c):
    m = _between(p, r"(.*?) - (.*) Given a choice of categories .*, the text refers to which one\?\n")
    return {"title": m.group(1), "content": m.group(2), "label": DBPEDIA.index(c)}


def _siqa(p, c):
    m = _between(p, r"(.*)\n\nGiven the context: (.*)\n\nPossible answers: (.*)\n")
    answers = m.group(3).split(", ")
    if len(answers) != 3 or c not in answers:
        return None  # an answer containing ", " makes the list ambiguous
    return {"context": m.group(1), "question": m.group(2), "answerA": answers[0], "answerB": answers[1],
            "answerC": answers[2], "label": str(answers.index(c) + 1)}


def _cosmos(p, c):
    m = _between(p, r"(.*)\n(.*)\nPick the best answer from the following options:\n- (.*)\n")
    answers = m.group(3).split("\n - ")
    return {"context": m.group(1), "question": m.group(2), **{f"answer{i}": a for i, a in enumerate(answers)},
            "label": answers.index(c)}


def _qasc(p, c):
    m = _between(p, r"(.*?), and (.*?)\. Given these facts, (.*) among the following options:\n- (.*)\n")
    options = m.group(4).split("\n - ")
    labels = "ABCDEFGH"[: len(options)]
    return {"fact1": m.group(1) + ".", "fact2": m.group(2) + ".", "question": m.group(3) + "?",
            "choices": {"text": options, "label": list(labels)}, "answerKey": labels[options.index(c)]}


GOLDEN = {
    "rotten_tomatoes_Movie_Expressed_Sentiment": ("rotten_tomatoes", "Movie Expressed Sentiment", _rt),
    "imdb_Reviewer_Enjoyment_Yes_No": ("imdb", "Reviewer Enjoyment Yes No", _imdb),
    "ag_news_classify_with_choices": ("ag_news", "classify_with_choices", _ag),
    "glue_mrpc_equivalent": ("glue/mrpc", "equivalent", _mrpc),
    "glue_qqp_duplicate_or_not": ("glue/qqp", "duplicate or not", _qqp),
    "samsum_Generate_a_summary_for_this_dialogue": ("samsum", "Generate a summary for this dialogue", _samsum),
    "xsum_DOC_tldr": ("xsum", "DOC_tldr", _xsum),
    "common_gen_Given_concepts_type_1": ("common_gen", "Given concepts type 1", _common_gen),
    "app_reviews_convert_to_star_rating": ("app_reviews", "convert_to_star_rating", _app),
    "dbpedia_14_given_a_choice_of_categories_": ("dbpedia_14", "given_a_choice_of_categories ", _dbpedia),
    "social_i_qa_Show_choices_and_generate_answer": ("social_i_qa", "Show choices and generate answer", _siqa),
    "cosmos_qa_context_question_description_answer_text": ("cosmos_qa", "context_question_description_answer_text",
                                                           _cosmos),
    "qasc_qa_with_separated_facts_1": ("qasc", "qa_with_separated_facts_1", _qasc),
}


@pytest.mark.parametrize("stem", sorted(GOLDEN))
def test_promptsource_golden_against_t0_renders(shared_data, ps_tasks, stem):
    """Our render of the imported template equals T0's render of the same row (whitespace-normalised)."""
    key, name, parse = GOLDEN[stem]
    task, idx = ps_tasks[key][1][name]
    checked = 0
    for n, golden in enumerate(_golden_rows(shared_data / "instruction/t0_rendered" / f"{stem}.jsonl")):
        raw = parse(golden["prompt"], golden["completion"])
        if raw is None:
            continue
        row = _render(task, idx, raw, n=n)
        assert _norm(row["inputs"]) == _norm(golden["prompt"]), (stem, n)
        assert _norm(row["targets"]) == _norm(golden["completion"]), (stem, n)
        checked += 1
    assert checked >= 190


# ------------------------------------------------------------------------------------------------ NIv2 / CoT / T0

TASK1388_DEF_POS2_INSTANCE0 = (
    'Definition: In this task, you will be presented with a premise and a hypothesis sentence. Determine whether the '
    'hypothesis sentence entails (implies), contradicts (opposes), or is neutral with respect to the given premise. '
    'Please answer with "Contradiction", "Neutral", or "Entailment".\n'
    "\n"
    "Positive Example 1 -\n"
    "Input: Premise: Ockleton, Morpurgo, Cornelius, Dysart and half a dozen others too drunk to mention. But there "
    "was so much coming and going that any one of us could have slipped out, pushed Everett through the window and "
    "slipped back again without being noticed. Damn it all we didn't even notice Everett was missing until a porter "
    "tripped over him in the quad so anything's theoretically possible. <sep> Hypothesis: Everett was missing\n"
    "Output: Entailment\n"
    "\n"
    "Positive Example 2 -\n"
    "Input: Premise: I should dearly have liked to know whether they were Europeans or Americans, but I couldn't "
    "hear the accents. They appeared to be arguing. I hoped the white men weren't telling him to eliminate all "
    "witnesses because I don't believe it would have needed much persuasion. <sep> Hypothesis: eliminating all "
    "witnesses would have needed much persuasion\n"
    "Output: Contradiction\n"
    "\n"
    "Now complete the following example -\n"
    "Input: Premise: B: I think the, uh, I think a lot of the commentators on, like the major networks, like right, "
    "it's kind of appropriate right now because of the election stuff going on, but, um, it seems that, um, they "
    "kind of get to throw their opinions into how they, you know, report on the news. A: Right. And I think even in "
    "the elections, they choose who they're going to follow and who they're not, and basically you know, if a "
    "candidate can get them to follow, then the news will, you know, kind of publicize his name. B: Yeah.  Yeah, "
    "exactly. A: I don't think that the way I get the news is the right way to get it. <sep> Hypothesis: the way "
    "she gets the news is the right way to get it\n"
    "Output:")


def test_niv2_import_and_golden(shared_data):
    folder = shared_data / "instruction/natural_instructions"
    items = niv2.import_path(folder, notes=[])
    assert len(items) == 12
    by_name = {spec.name: (spec, tset) for spec, tset in items}
    spec, tset = by_name["niv2.task1388_cb_entailment"]
    assert (spec.collection, spec.cluster, spec.category) == ("NIv2", "textual_entailment", "Textual Entailment")
    assert spec.source.format == "niv2" and spec.metrics == ["exact_match"] and spec.license == "CC BY-SA 3.0"
    names = [t.name for t in tset.zero_shot]
    assert names[:3] == ["definition", "definition_pos2", "definition_pos2_neg2_explanation"]
    task = Task(spec, tset)
    example = next(e for e in task.examples("train") + task.examples("validation")
                   if e.raw["id"] == "task1388-b242d3b1bc4d48a49cfde235426f0896")  # instance 0
    row = task.render(example, template_idx=names.index("definition_pos2"))
    assert row["inputs"] == TASK1388_DEF_POS2_INSTANCE0
    assert row["targets"] == "Contradiction" and row["task_source"] == "NIv2"
    explained = task.render(example, template_idx=2)["inputs"]
    assert "Negative Example 1 -" in explained and "Explanation: This is a good example." in explained
    for spec, tset in items:  # every task renders every template on its first instance
        task = Task(spec, tset)
        first = (task.examples("train") + task.examples("validation"))[0]
        for i in range(len(tset.zero_shot)):
            rendered = task.render(first, template_idx=i)
            assert rendered["inputs"] and rendered["targets"], (spec.name, i)


def test_flan_cot_import_and_golden(shared_data):
    items = flan_cot.import_path(shared_data / "instruction/flan_cot")
    assert [s.name for s, _ in items] == ["cot.aqua", "cot.creak", "cot.ecqa", "cot.gsm8k", "cot.qasc",
                                         "cot.sensemaking", "cot.strategyqa"]
    spec, tset = dict((s.name, (s, t)) for s, t in items)["cot.gsm8k"]
    assert (spec.collection, spec.rationale_field, spec.source.format) == ("CoT", "rationale", "flan_cot_tsv")
    assert [t.inverted for t in tset.zero_shot].count(True) == 1
    task = Task(spec, tset)
    first = Example("gsm8k_train.tsv:0", next(iter(flan_cot.read_flan_cot_tsv(
        shared_data / "instruction/flan_cot/gsm8k_train.tsv"))))
    question = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How "
                "many clips did Natalia sell altogether in April and May?")
    rationale = "Natalia sold 48 / 2 = 24 clips in May. Natalia sold 48 + 24 = 72 clips altogether in April and May."
    cot = task.render(first, cot=True, template_idx=0)
    assert cot["inputs"] == question + "\nLet's think step by step."
    assert cot["targets"] == rationale + " So the answer is 72."
    assert cot["cot"] is True and cot["task_source"] == "CoT"
    plain = task.render(first, template_idx=1)
    assert (plain["inputs"], plain["targets"]) == (f"Question: {question}\nAnswer:", "72")
    inverted = task.render(first, template_idx=task.template_indices(inverted=True)[0])
    assert inverted["inputs"].endswith("justify this answer: 72")
    assert inverted["targets"] == f"Question: {question}\nReasoning: {rationale}"
    aqua = Task(*dict((s.name, (s, t)) for s, t in items)["cot.aqua"])
    first_aqua = next(iter(flan_cot.read_flan_cot_tsv(shared_data / "instruction/flan_cot/aqua_train.tsv")))
    row = aqua.render(Example("aqua_train.tsv:0", first_aqua), cot=True)
    assert "\nOptions:\n(A) 300" in row["inputs"] and row["targets"].endswith("So the answer is (C).")


def test_t0_rendered_tasks(shared_data):
    items = t0.import_path(shared_data / "instruction/t0_rendered")
    assert len(items) == 13
    spec, tset = dict((s.name, (s, t)) for s, t in items)["t0.glue_mrpc_equivalent"]
    assert (spec.collection, spec.cluster, spec.category) == ("T0", "paraphrase", "glue/mrpc")
    assert t0.dataset_of("dbpedia_14_given_a_choice_of_categories_") == "dbpedia_14"
    task = Task(spec, tset)
    row = task.render(Example("r", {"prompt": "Are they?\nA\nB\n", "completion": "equivalent<|endoftext|>"}))
    assert (row["inputs"], row["targets"]) == ("Are they?\nA\nB", "equivalent")
    assert task.render_full(Example("r2", {"prompt": "x", "completion": "not equivalent<|endoftext|>"})).answer \
        == "not equivalent"


# ------------------------------------------------------------------------------------------------ registry folders

@pytest.fixture(scope="module")
def shared_registry(shared_data, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("imports") / "shared"
    notes: list[str] = []
    items = import_shared(shared_data, out, notes=notes)
    skipped = [n for n in notes if "skipped template" in n]
    assert len(skipped) == (0 if promptsource.parts_share_random_draws() else 3), notes
    return out, [s.name for s, _ in items]


def test_import_shared_writes_a_loadable_registry(shared_registry, shared_data, monkeypatch):
    out, names = shared_registry
    assert len(names) == 72 and len(set(names)) == 72
    registry = Registry.discover([out], bundled=False, env=False, python=False)
    assert sorted(registry.names()) == sorted(names)
    counts = {c: len(registry.select(f"collection:{c}")) for c in ("promptsource", "NIv2", "CoT", "T0")}
    assert counts == {"promptsource": 40, "NIv2": 12, "CoT": 7, "T0": 13}
    assert not list(out.parent.glob("*.tmp-*")), "staging folder left behind"
    spec_text = (out / "niv2.task1388_cb_entailment.yaml").read_text()
    assert "files: ../" in spec_text and "files: /" not in spec_text  # written relative to the folder
    # The data lies outside the registry folder: refused until the user allows that folder (docs/security.md).
    with pytest.raises(FlanmixError, match="outside the task's registry folder"):
        registry.get("niv2.task1388_cb_entailment").examples("train")
    monkeypatch.setenv("FLANMIX_ALLOW_PATHS", str(shared_data))
    # Every file-sourced task loads its rows from the shared data and renders (zero-shot, few-shot, CoT).
    for task in registry:
        if task.spec.source.hub:
            continue
        example = task.examples("train")[0]
        for idx in task.template_indices():
            assert task.render(example, template_idx=idx)["targets"]
        assert task.render(example, template_type="fs_noopt")["inputs"]
        if task.has_cot:
            assert task.render(example, cot=True, template_type="fs_noopt")["targets"]
    t0_task = registry.get("t0.rotten_tomatoes_Movie_Expressed_Sentiment")
    first = t0_task.render(t0_task.examples("train")[0])
    assert first["targets"] in ("positive", "negative") and "<|endoftext|>" not in first["targets"]


def test_written_templates_round_trip(shared_registry, ps_items):
    out, _ = shared_registry
    for spec, tset in [item for items in ps_items.values() for item in items]:
        written = YamlDoc.read(out / "templates" / f"{spec.templates}.yaml").validate(promptsource.TemplateSet)
        assert written == tset, spec.name


def test_register_in_place(shared_data):
    items = niv2.import_file(shared_data / "instruction/natural_instructions/task085_unnatural_addsub_arithmetic.json")
    try:
        (task,) = register(items, replace=True)
        assert task.name in Registry.discover(bundled=False, env=False).names()
        assert task.render(task.examples()[0])["targets"]
    finally:
        unregister_task(items[0][0].name)


def test_overwrite_refused_then_allowed(shared_data, tmp_path, capsys):
    src = shared_data / "instruction/flan_cot/strategyqa_train.tsv"
    out = tmp_path / "reg"
    assert cli(["import", "flan-cot", str(src), "--out", str(out)]) == 0
    before = (out / "cot.strategyqa.yaml").read_text()
    assert cli(["import", "flan-cot", str(src), "--out", str(out), "--cluster", "other"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--overwrite" in err
    assert (out / "cot.strategyqa.yaml").read_text() == before
    assert cli(["import", "flan-cot", str(src), "--out", str(out), "--cluster", "other", "--overwrite"]) == 0
    assert "cluster: other" in (out / "cot.strategyqa.yaml").read_text()
    assert not list(tmp_path.glob("*.tmp-*"))
    assert cli(["import", "flan-cot", str(src), "--out", str(out), "--overwrite", "--absolute-paths"]) == 0
    assert f"files: {src.resolve()}" in (out / "cot.strategyqa.yaml").read_text()


def test_cli_promptsource_and_render(shared_data, tmp_path, capsys):
    out = tmp_path / "ps"
    src = shared_data / "templates/promptsource/super_glue"
    assert cli(["import", "promptsource", str(src), "--out", str(out)]) == 0
    assert "wrote 5 tasks" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.yaml")) == [f"ps.super_glue.{s}.yaml" for s in
                                                          ("boolq", "cb", "copa", "rte", "wic")]
    assert (out / "templates/promptsource/ps.super_glue.rte.yaml").is_file()
    # hub sources cannot load offline: their templates are compiled and checked, the rows are not
    assert cli(["tasks", "validate", str(out), "--rows", "1"]) == 0
    assert "5 task(s) checked without rows" in capsys.readouterr().out


def test_files_importer(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLANMIX_ALLOW_PATHS", str(tmp_path))  # the data lies beside the registry folder, not in it
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"q": f"What is {i} + 1?", "a": str(i + 1)}) + "\n" for i in range(6)))
    out = tmp_path / "reg"
    assert cli(["import", "files", str(data), "--name", "my_qa", "--input-field", "q", "--target-field", "a",
                "--cluster", "arith", "--out", str(out)]) == 0
    task = Registry.discover([out], bundled=False, env=False, python=False).get("my_qa")
    assert task.cluster == "arith" and task.num_templates() == 4
    row = task.render(task.examples("train")[0], template_idx=1)
    assert re.fullmatch(r"Input: What is \d \+ 1\?\nOutput:", row["inputs"]) and row["targets"].isdigit()
    csv_file = tmp_path / "swap.csv"
    csv_file.write_text("target_text,input_text\nout1,in1\nout2,in2\n")
    (spec, tset), = files_importer.import_file(csv_file, name="swap", input_field="target_text",
                                               target_field="input_text")
    task = Task(spec, tset)
    rendered = task.render(Example("e", {"target_text": "A", "input_text": "B"}))
    assert (rendered["inputs"], rendered["targets"]) == ("A", "B")
    assert cli(["import", "files", str(data), "--name", "bad", "--input-field", "question", "--target-field", "a",
                "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'question' not in the data" in err and str(data) in err


# ------------------------------------------------------------------------------------------------ bad input

def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_malformed_promptsource_yaml(tmp_path, capsys):
    bad = tmp_path / "bad" / "templates.yaml"
    bad.parent.mkdir()
    bad.write_text("dataset: x\ntemplates:\n  a: !Template\n    jinja: 'unclosed\n  b: [\n")
    assert cli(["import", "promptsource", str(bad), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(bad), "malformed YAML")
    bad.write_text("dataset: x\ntemplates:\n  a: !Template\n    name: t\n    jinja: 'no separator {{ x }}'\n")
    assert cli(["import", "promptsource", str(bad), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(bad), "|||")
    bad.write_text("dataset: x\ntemplates:\n  a: !Template\n    name: t\n    jinja: '{{ x ||| {{ y }}'\n")
    assert cli(["import", "promptsource", str(bad), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(bad), "Jinja syntax error")
    bad.write_text("just: a mapping\n")
    assert cli(["import", "promptsource", str(bad), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(bad), "not a promptsource template file")
    assert not (tmp_path / "o").exists()


def test_missing_inputs(tmp_path, capsys):
    for kind in ("promptsource", "niv2", "flan-cot", "t0", "shared"):
        assert cli(["import", kind, str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2, kind
        _one_line_error(capsys, str(tmp_path / "nope"), "not found")
    assert cli(["import", "files", str(tmp_path / "nope.jsonl"), "--name", "n", "--input-field", "a",
                "--target-field", "b", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "nope.jsonl", "file not found")
    (tmp_path / "empty").mkdir()
    assert cli(["import", "niv2", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "empty", "no Super-NaturalInstructions")


def test_niv2_without_instances(tmp_path, capsys):
    bad = tmp_path / "task999_broken.json"
    bad.write_text(json.dumps({"Definition": ["Do it."], "Categories": ["X"], "Positive Examples": []}))
    assert cli(["import", "niv2", str(bad), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(bad), "Instances")
    bad.write_text("{not json")
    assert cli(["import", "niv2", str(bad), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(bad), "invalid JSON")


def test_bad_tsv_and_jsonl(tmp_path, capsys):
    tsv = tmp_path / "x_train.tsv"
    tsv.write_text("only two\tfields\n")
    assert cli(["import", "flan-cot", str(tsv), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(tsv), "3 tab-separated fields")
    jsonl = tmp_path / "x_y.jsonl"
    jsonl.write_text(json.dumps({"input": "a"}) + "\n")
    assert cli(["import", "t0", str(jsonl), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(jsonl), "prompt/completion")


def test_import_shared_partial_and_empty(shared_data, tmp_path):
    partial = tmp_path / "data"
    (partial / "instruction").mkdir(parents=True)
    (partial / "instruction" / "flan_cot").symlink_to(shared_data / "instruction" / "flan_cot")
    notes: list[str] = []
    items = import_shared(partial, notes=notes)
    assert {s.collection for s, _ in items} == {"CoT"} and len(notes) == 3
    assert {s.collection for s, _ in import_shared(shared_data, kinds=["t0", "niv2"])} == {"T0", "NIv2"}
    assert cli(["import", "shared", str(shared_data), "--only", "flan_cot", "--out", str(tmp_path / "cot")]) == 0
    assert len(list((tmp_path / "cot").glob("*.yaml"))) == 7
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlanmixError, match="nothing to import"):
        import_shared(tmp_path / "empty")


def test_write_registry_rejects_duplicate_names(shared_data, tmp_path):
    items = flan_cot.import_file(shared_data / "instruction/flan_cot/qasc_train.tsv")
    with pytest.raises(FlanmixError, match="both called"):
        write_registry(items + items, tmp_path / "o")
    assert not (tmp_path / "o").exists()
