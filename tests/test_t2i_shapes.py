"""The t2i suite's shapes world: renderer, prompt grammar, pixel judge, and the prompt-set files."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from suites.errors import UserError
from suites.t2i import prompt_sets
from suites.t2i.prompt_sets import load_prompt_set, prompt_set_files
from suites.t2i.shapes import make_prompt_sets
from suites.t2i.shapes.oracle import detect_objects, judge, score_images
from suites.t2i.shapes.prompts import (FAMILIES, SCENE_RELATION_DOMINANCE, SCENE_RELATION_MARGIN, ObjectPhrase,
                                       Prompt, format_prompt, parse_prompt, random_prompt, relation_holds, scene_for)
from suites.t2i.shapes.render import (BASE_COLOURS, COLOURS, MIN_GAP, UNUSUAL_COLOURS, Scene, SceneObject,
                                      boxes_apart, degrade, random_scene, render)

ALL_COLOURS = tuple(COLOURS)
N_PER_FAMILY = 300
MILD = {"noise_std": 0.05, "blur_sigma": 0.6}


def _scenes_and_prompts(family, seed, n=N_PER_FAMILY):
    rng = np.random.default_rng(seed)
    prompts = [random_prompt(rng, family, ALL_COLOURS) for _ in range(n)]
    return prompts, [scene_for(p, rng) for p in prompts]


# --- renderer ------------------------------------------------------------------------------------

def test_renderer_is_deterministic_given_the_seed():
    scenes_a = [random_scene(np.random.default_rng(7)) for _ in range(3)]
    scenes_b = [random_scene(np.random.default_rng(7)) for _ in range(3)]
    assert scenes_a == scenes_b
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    batch_a = render([random_scene(rng_a, colours=ALL_COLOURS) for _ in range(50)])
    batch_b = render([random_scene(rng_b, colours=ALL_COLOURS) for _ in range(50)])
    np.testing.assert_array_equal(batch_a, batch_b)


def test_renderer_draws_each_object_in_its_box_on_black():
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng, colours=ALL_COLOURS) for _ in range(200)]
    images = render(scenes)
    assert images.shape == (200, 32, 32, 3) and images.dtype == np.uint8
    floats = render(scenes, dtype=np.float32)
    assert floats.dtype == np.float32 and floats.min() >= 0 and floats.max() <= 1
    np.testing.assert_allclose(floats * 255, images, atol=1e-3)
    fill = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
    for scene, image in zip(scenes, images):
        assert 1 <= len(scene.objects) <= 3
        inside_any_box = np.zeros((32, 32), bool)
        for i, obj in enumerate(scene.objects):
            assert all(boxes_apart(obj, other, MIN_GAP) for other in scene.objects[i + 1:])
            box = image[obj.y0:obj.y0 + obj.size, obj.x0:obj.x0 + obj.size]
            covered = (box == COLOURS[obj.colour]).all(-1)
            assert (covered | (box == 0).all(-1)).all(), "a box holds only its object's colour and black"
            assert abs(covered.mean() - fill[obj.shape]) < 0.1, (obj, covered.mean())
            inside_any_box[obj.y0:obj.y0 + obj.size, obj.x0:obj.x0 + obj.size] = True
        assert (image[~inside_any_box] == 0).all(), "background is black"


def test_render_one_scene_and_reject_bad_scenes():
    scene = Scene((SceneObject("triangle", "white", 10, 3, 4),))
    assert render(scene).shape == (32, 32, 3)
    with pytest.raises(ValueError):
        Scene((SceneObject("square", "red", 10, 0, 0), SceneObject("circle", "blue", 10, 5, 5)))   # overlap
    with pytest.raises(ValueError):
        Scene((SceneObject("square", "red", 10, 25, 0),))                                          # off canvas
    with pytest.raises(ValueError):
        SceneObject("hexagon", "red", 10, 0, 0)


# --- prompt grammar ------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_grammar_round_trip(family):
    rng = np.random.default_rng(3)
    for _ in range(200):
        prompt = random_prompt(rng, family, ALL_COLOURS)
        assert prompt.family == family
        assert parse_prompt(format_prompt(prompt)) == prompt
        assert format_prompt(parse_prompt(prompt.text)) == prompt.text


def test_grammar_accepts_variants():
    red_circle, green_triangle = ObjectPhrase("red", "circle"), ObjectPhrase("green", "triangle")
    assert parse_prompt("  A  Red circle. ") == Prompt((red_circle,))
    assert parse_prompt("one red circle") == Prompt((red_circle,))
    assert parse_prompt("2 blue squares") == Prompt((ObjectPhrase("blue", "square", 2),))
    assert parse_prompt("an orange square").objects[0].colour == "orange"
    for text in ("a red circle to the left of a green triangle", "a red circle left of a green triangle",
                 "a red circle on the left of a green triangle"):
        assert parse_prompt(text) == Prompt((red_circle, green_triangle), "left")
    assert parse_prompt("a red circle below a green triangle").relation == "below"
    assert format_prompt(Prompt((ObjectPhrase("orange", "circle"),))) == "an orange circle"


@pytest.mark.parametrize("text", [
    "a teal circle", "a red hexagon", "two blue square", "a red circles", "four red circles", "", "red circle",
    "a red circle next to a blue square", "two red circles to the left of a blue square", "a red circle above",
])
def test_malformed_prompt_is_a_one_line_user_error(text):
    with pytest.raises(UserError) as error:
        parse_prompt(text)
    message = str(error.value)
    assert "\n" not in message and repr(text) in message and "Expected 'a <colour> <shape>'" in message


def test_malformed_prompt_suggests_a_close_word():
    with pytest.raises(UserError, match="Did you mean 'circle'"):
        parse_prompt("a red circel")


@pytest.mark.parametrize("family", FAMILIES)
def test_scene_for_satisfies_the_prompt(family):
    prompts, scenes = _scenes_and_prompts(family, seed=21, n=200)
    for prompt, scene in zip(prompts, scenes):
        kinds = [(o.colour, o.shape) for o in scene.objects]
        for kind, count in prompt.required_counts.items():
            assert kinds.count(kind) == count
        if prompt.relation:
            subject, reference = scene.objects[:2]
            assert relation_holds(subject.centre, reference.centre, prompt.relation,
                                  SCENE_RELATION_MARGIN * 32, SCENE_RELATION_DOMINANCE)


# --- the judge -----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("condition", ["clean", "mild blur and noise", "dark tinted background"])
def test_judge_accepts_the_renderers_own_images(family, condition):
    prompts, scenes = _scenes_and_prompts(family, seed=100 + FAMILIES.index(family))
    images = render(scenes)
    rng = np.random.default_rng(5)
    if condition == "mild blur and noise":
        images = degrade(images, rng, **MILD)
    elif condition == "dark tinted background":     # a generator's typical failure (env.md §3e)
        background = (images == 0).all(-1, keepdims=True)
        tint = np.array([0.25, 0.1, 0.18], np.float32)
        images = degrade(np.where(background, tint, images / 255).astype(np.float32), rng, **MILD)
    graded, binary = score_images(images, prompts)
    assert binary.mean() >= 0.99, (family, condition, binary.mean())
    assert graded.min() >= 0.0 and graded.max() <= 1.0


def _image(objects):
    """One crisp image of (shape, colour, size, x0, y0) objects."""
    return render(Scene(tuple(SceneObject(*o) for o in objects)))


def test_judge_rejects_wrong_colour_and_shape():
    blue_square = _image([("square", "blue", 10, 11, 11)])
    [verdict] = judge(blue_square, "a red circle")
    assert not verdict.binary and verdict.score == 0.0
    [verdict] = judge(_image([("circle", "blue", 10, 11, 11)]), "a red circle")
    assert verdict.parts == {"object.colour": False, "object.shape": True, "object.count": False}
    [verdict] = judge(_image([("square", "red", 10, 11, 11)]), "a red circle")
    assert verdict.parts == {"object.colour": True, "object.shape": False, "object.count": False}
    [verdict] = judge(_image([("circle", "red", 10, 11, 11), ("square", "blue", 8, 0, 0)]), "a red circle")
    assert verdict.binary, "objects the prompt does not mention are allowed"


def test_judge_catches_count_mismatches():
    three = _image([("square", "blue", 9, 1, 1), ("square", "blue", 9, 20, 2), ("square", "blue", 9, 10, 20)])
    two = _image([("square", "blue", 9, 1, 1), ("square", "blue", 9, 20, 2)])
    verdicts = judge(np.stack([three, two, two]), ["two blue squares", "three blue squares", "a blue square"])
    for verdict in verdicts:
        assert not verdict.binary and verdict.parts["object.count"] is False
        assert verdict.parts["object.colour"] and verdict.parts["object.shape"]
    assert [v.phrases[0].found for v in verdicts] == [3, 2, 2]
    [verdict] = judge(two, "two blue squares")
    assert verdict.binary


def test_judge_catches_swapped_relations_and_roles():
    prompts, scenes = _scenes_and_prompts("relation", seed=33, n=200)
    images = degrade(render(scenes), np.random.default_rng(1), **MILD)
    opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}
    swapped_relation = [Prompt(p.objects, opposite[p.relation]) for p in prompts]
    swapped_roles = [Prompt(p.objects[::-1], p.relation) for p in prompts]
    for wrong in (swapped_relation, swapped_roles):
        verdicts = judge(images, wrong)
        assert not any(v.binary for v in verdicts)
        assert all(v.relation_holds is False for v in verdicts)
        assert all(v.parts["object1.count"] and v.parts["object2.count"] for v in verdicts)


def test_judge_ignores_dark_or_hazy_backgrounds_and_specks():
    rng = np.random.default_rng(0)
    dark_tint = np.broadcast_to(np.array([0.3, 0.05, 0.05], np.float32), (32, 32, 3))
    grey_haze = np.full((32, 32, 3), 0.55, np.float32)
    specks = np.zeros((32, 32, 3), np.float32)
    specks[rng.integers(0, 32, 12), rng.integers(0, 32, 12)] = (1.0, 0.0, 0.0)
    images = degrade(np.stack([dark_tint, grey_haze, specks]), rng, noise_std=0.03, blur_sigma=0.0)
    assert detect_objects(images) == [(), (), ()]
    graded, binary = score_images(images, "a red circle")
    assert not binary.any() and graded.max() == 0.0


def test_judge_finds_no_shape_in_blobs_that_are_none_of_the_three():
    y, x = np.mgrid[0:32, 0:32] + 0.5
    r2 = (x - 16) ** 2 + (y - 16) ** 2
    blobs = {
        "ring": (r2 <= 36) & (r2 >= 9),
        "cross": ((abs(x - 16) <= 2) & (abs(y - 16) <= 6)) | ((abs(y - 16) <= 2) & (abs(x - 16) <= 6)),
        "L": ((x >= 10) & (x <= 13) & (y >= 10) & (y <= 22)) | ((y >= 19) & (y <= 22) & (x >= 10) & (x <= 22)),
        "upside-down triangle": (y >= 10) & (y <= 22) & (abs(x - 16) <= (22 - y) / 2),
        "circle merged with a square": ((x - 12) ** 2 + (y - 12) ** 2 <= 16) | ((abs(x - 18) <= 4) & (abs(y - 18) <= 4)),
        "ellipse 7:5": ((x - 16) / 7) ** 2 + ((y - 16) / 5) ** 2 <= 1,
    }
    images = np.zeros((len(blobs), 32, 32, 3), np.uint8)
    for image, mask in zip(images, blobs.values()):
        image[mask] = COLOURS["red"]
    for batch in (images, degrade(images, np.random.default_rng(2), **MILD)):
        for name, objects in zip(blobs, detect_objects(batch)):
            assert [(o.colour, o.shape) for o in objects] == [("red", None)], name


def test_judge_reads_channels_first_float_batches():
    prompts, scenes = _scenes_and_prompts("single", seed=8, n=20)
    channels_first = np.moveaxis(render(scenes, dtype=np.float32), -1, 1)
    _, binary = score_images(channels_first, prompts)
    assert binary.all()
    with pytest.raises(UserError):
        judge(channels_first[:1], "a red hexagon")


# --- prompt-set files ----------------------------------------------------------------------------

def test_every_prompt_set_loads():
    sets = prompt_set_files()
    sizes = {name: {split: len(load_prompt_set(name, split)) for split in splits} for name, splits in sets.items()}
    assert sizes["b2diffurl/template1"] == {"train": 45, "test": 90}
    assert sizes["b2diffurl/template2"] == {"train": 40, "test": 40}
    assert sizes["b2diffurl/template3"] == {"train": 40, "test": 30}
    assert sizes["ddpo/simple_animals"] == {"all": 45} and sizes["ddpo/activities"] == {"all": 3}
    animals = load_prompt_set("ddpo/imagenet_animals", "all")   # ImageNet classes [0, 398)
    assert len(animals) == 398 and animals[0] == "tench" and animals[-1] == "puffer"
    assert {n for n in sizes if n.startswith("shapes-v0/")} == {f"shapes-v0/{s}" for s in make_prompt_sets.DESCRIPTIONS}


def test_shapes_prompt_files_match_their_script():
    assert make_prompt_sets.main(["--check"]) == 0
    for name, splits in make_prompt_sets.build_prompt_sets().items():
        for split, prompts in splits.items():
            assert list(load_prompt_set(f"shapes-v0/{name}", split)) == prompts


def _kinds(prompts):
    return {p.objects[0].kind for p in prompts}


def _split(name):
    return ([parse_prompt(t) for t in load_prompt_set(name, "train")],
            [parse_prompt(t) for t in load_prompt_set(name, "test")])


def test_shapes_splits_are_disjoint_where_they_must_be():
    for name in prompt_set_files():
        if name.startswith("shapes-v0/") or name.startswith("b2diffurl/"):
            assert not set(load_prompt_set(name, "train")) & set(load_prompt_set(name, "test")), name
    train, test = _split("shapes-v0/composition")          # seen parts, unseen pairs
    assert not _kinds(train) & _kinds(test)
    assert {c for c, _ in _kinds(test)} <= {c for c, _ in _kinds(train)}
    assert {s for _, s in _kinds(test)} <= {s for _, s in _kinds(train)}
    train, test = _split("shapes-v0/attribute")            # no test colour in train
    assert {c for c, _ in _kinds(train)} == set(BASE_COLOURS) and {c for c, _ in _kinds(test)} == set(UNUSUAL_COLOURS)
    train, test = _split("shapes-v0/counting")             # seen kinds, unseen counts
    assert _kinds(train) == _kinds(test)
    assert not {(p.objects[0].kind, p.objects[0].count) for p in train} & {(p.objects[0].kind, p.objects[0].count)
                                                                           for p in test}
    train, test = _split("shapes-v0/spatial")              # no test prompt means a train prompt
    meaning = make_prompt_sets._meaning
    assert not {meaning(p) for p in train} & {meaning(p) for p in test}
    assert all(p.family == "relation" for p in train + test)


def test_unknown_prompt_set_or_split_suggests_names():
    with pytest.raises(UserError, match="Did you mean 'shapes-v0/spatial'") as error:
        load_prompt_set("shapes-v0/spatail", "train")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="Did you mean 'test'"):
        load_prompt_set("shapes-v0/spatial", "tset")


@pytest.mark.parametrize("file_name, content, expected", [
    ("bad_train.txt", "# header\na red circle\na teal circle\n", "bad_train.txt:3: malformed prompt 'a teal circle'"),
    ("bad_train.txt", "a red circle\n\na red circle\n", "bad_train.txt:3: duplicate prompt 'a red circle' (first at"),
    ("bad_train.txt", "# only a comment\n\n", "bad_train.txt: the prompt set is empty"),
    ("bad_train.json", '["a red circle",\n "a blue square",,]', "bad_train.json:2: not valid JSON"),
    ("bad_train.json", '{"prompts": []}', "bad_train.json: a JSON prompt set must be a list of strings"),
    ("bad_train.json", '["a red circle", 3]', "bad_train.json: item 1 is 3, not a string"),
])
def test_malformed_prompt_file_names_file_and_line(tmp_path, file_name, content, expected):
    group = tmp_path / "shapes-v9"
    group.mkdir()
    (group / file_name).write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as error:
        load_prompt_set("shapes-v9/bad", "train", root=tmp_path)
    message = str(error.value)
    assert "\n" not in message and expected in message, message


def test_t2i_package_imports_stay_light():
    code = ("import sys, suites.t2i, suites.t2i.prompt_sets, suites.t2i.shapes.prompts; "
            "print(sorted(m for m in ('scipy', 'torch', 'ray', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(prompt_sets.__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
