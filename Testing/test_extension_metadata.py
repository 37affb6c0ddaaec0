"""The extension is ready for the Slicer Extensions Index as far as it depends on us: a LICENSE at the root
(Apache-2.0 for the code, the bundled data's own licences named), the index entry
(Resources/ExtensionsIndex/AdaptiveSeg.json) in the current catalog-entry schema (v1.0.2, rules written out
here: the test runs offline) and meeting the index validator's checks (scripts/check_description_files.py:
category, scm_url, repository name, CMake project name, icon and screenshot URLs, licence file), and the
metadata consistent across CMakeLists.txt, the JSON entry, both modules and pyproject.toml. Screenshots that
are not from Slicer say so."""
import ast
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "Resources" / "ExtensionsIndex" / "AdaptiveSeg.json"
MODULES = ["InteractiveRefine", "FewShotSeg"]
SCHEMA = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
#: The catalog-entry schema v1.0.2: required keys, and each allowed key with its JSON type.
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool,
                "tier": int}
#: A few of the validator's accepted categories (the full list is in the index's validator).
ACCEPTED_CATEGORIES = {"Segmentation", "Quantification", "Utilities", "Examples"}


def cmake_var(name):
    text = (ROOT / "CMakeLists.txt").read_text()
    match = re.search(rf'set\s*\({name}\s*"([^"]*)"\s*\)', text)
    assert match, f"{name} is not set in CMakeLists.txt"
    return match.group(1)


def entry():
    return json.loads(ENTRY.read_text())


def module_parent_fields(module):
    """parent.<field> = value assignments in the module class's __init__ (strings and lists of strings)."""
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == module)
    fields = {}
    for node in ast.walk(klass):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute) \
                and ast.unparse(node.targets[0].value) == "self.parent":
            fields[node.targets[0].attr] = node.value
    return fields


def test_entry_follows_the_catalog_schema():
    data = entry()
    assert data["$schema"] == SCHEMA
    assert SCHEMA_REQUIRED <= set(data), SCHEMA_REQUIRED - set(data)
    assert set(data) <= set(SCHEMA_TYPES), f"not in the schema: {set(data) - set(SCHEMA_TYPES)}"
    for key, value in data.items():
        expected = SCHEMA_TYPES[key]
        assert isinstance(value, expected) and (expected is bool or not isinstance(value, bool)), key
    assert data.get("scm_type", "git") in ("git", "local")
    assert 1 <= data.get("tier", 1) <= 5
    assert all(isinstance(d, str) for d in data.get("build_dependencies", []))


def test_entry_meets_the_index_validator():
    data = entry()
    assert data["category"] in ACCEPTED_CATEGORIES
    url = urlsplit(data["scm_url"])
    assert url.scheme in ("https", "git") and "://" in data["scm_url"]
    repo = Path(url.path).stem
    assert "slicer" in repo.lower(), f"the validator wants 'Slicer' in the repository name, got {repo!r}"
    # the entry's file name is the extension name, which is the top-level CMake project name
    project = re.search(r"project\s*\(\s*([^\s)]+)", (ROOT / "CMakeLists.txt").read_text(), re.I).group(1)
    assert project == ENTRY.stem == "AdaptiveSeg"
    assert (ROOT / "LICENSE").is_file()


def _raw_path(url, data):
    """The repository path a raw.githubusercontent.com URL of this repository points at (at scm_revision)."""
    parts = urlsplit(url)
    owner_repo = urlsplit(data["scm_url"]).path.strip("/").removesuffix(".git")
    prefix = f"/{owner_repo}/{data.get('scm_revision', 'main')}/"
    assert parts.scheme == "https" and parts.netloc == "raw.githubusercontent.com", url
    assert parts.path.startswith(prefix), f"{url} is not in {owner_repo} at {data.get('scm_revision')}"
    return ROOT / parts.path[len(prefix):]


def test_cmake_metadata_matches_the_entry_and_the_modules():
    data = entry()
    assert cmake_var("EXTENSION_CATEGORY") == data["category"]
    assert cmake_var("EXTENSION_DEPENDS").split() == data["build_dependencies"]
    homepage = cmake_var("EXTENSION_HOMEPAGE")
    assert homepage == data["scm_url"].removesuffix(".git")
    contributors = cmake_var("EXTENSION_CONTRIBUTORS")
    for module in MODULES:
        fields = module_parent_fields(module)
        category = fields["categories"].elts[0]
        assert isinstance(category, ast.Call) and category.args[1].value == data["category"], module
        assert [c.value for c in fields["contributors"].elts] == [contributors], module
        source = (ROOT / module / f"{module}.py").read_text()
        links = set(re.findall(r'href="(https://github\.com/[^"]+)"', source))
        assert links == {homepage}, (module, links)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = { text = "Apache-2.0" }' in pyproject


def test_icon_and_screenshots_exist_where_the_urls_point_and_say_what_they_are():
    from PIL import Image

    data = entry()
    icon = _raw_path(cmake_var("EXTENSION_ICONURL"), data)
    assert icon.is_file() and Image.open(icon).format == "PNG"
    screenshots = cmake_var("EXTENSION_SCREENSHOTURLS").split()
    assert screenshots
    for url in screenshots:
        path = _raw_path(url, data)
        assert path.is_file() and Image.open(path).format == "PNG", url
        description = Image.open(path).info.get("Description", "")
        # until a real Slicer screenshot replaces it, the picture says it is not one (caption + PNG text)
        assert description.startswith("NOT a 3D Slicer screenshot"), (url, description)


def test_license_is_apache_and_names_the_data_licences():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    notice = (ROOT / "NOTICE").read_text()
    for doc in (text, notice):
        assert "CC BY-SA 4.0" in doc and "CC BY 4.0" in doc
    for path in re.findall(r"InteractiveRefine/Resources/SampleData/[\w/.-]+", notice + text):
        assert (ROOT / path.rstrip("./")).exists(), path
    readme = (ROOT / "InteractiveRefine" / "Resources" / "SampleData" / "README.md").read_text()
    assert "CC BY-SA 4.0" in readme  # the sample's own notice is kept


@pytest.mark.parametrize("module", MODULES)
def test_module_help_names_the_extension(module):
    fields = module_parent_fields(module)
    help_text = ast.unparse(fields["helpText"])
    assert "AdaptiveSeg" in help_text
