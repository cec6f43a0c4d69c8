"""Packaging follows the layout: the wheel that `pip install .` builds holds every module and every shipped file."""

import glob
import os
import subprocess
import sys
import zipfile

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_wheel_holds_every_module_and_yaml_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), CHECKOUT], check=True, timeout=300, cwd=tmp_path)
    wheel, = glob.glob(str(tmp_path / "*.whl"))
    packed = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for pattern in ("recbole_diffusion/**/*.py", "properties/**/*.yaml", "properties/**/*.hyper", "properties/*.py"):
        for path in glob.glob(os.path.join(CHECKOUT, pattern), recursive=True):
            relative = os.path.relpath(path, CHECKOUT).replace(os.sep, "/")
            if relative.startswith("properties/"):
                relative = "recbole_diffusion/" + relative  # properties/ installs as recbole_diffusion.properties
            expected.add(relative)
    assert len(expected) > 60
    assert sorted(expected - packed) == []


def _install_requires():
    import configparser

    from packaging.requirements import Requirement

    parser = configparser.ConfigParser()
    parser.read(os.path.join(CHECKOUT, "setup.cfg"))
    lines = [line.strip() for line in parser["options"]["install_requires"].splitlines()]
    return parser["options"]["python_requires"], [Requirement(line) for line in lines if line]


def _needed_on(requirements, python_version):
    return {str(r.name).lower(): r for r in requirements
            if r.marker is None or r.marker.evaluate({"python_version": python_version})}


def test_from_python_3_12_recbole_s_dependencies_but_ray_are_this_package_s_own():
    """On 3.12+ RecBole is installed with --no-deps (its ray pin has no wheels there): every other dependency of
    RecBole must then come from this package, with RecBole's own version bounds; on 3.10-3.11 RecBole itself is
    required, as before, and pip installs its dependencies."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    python_requires, requirements = _install_requires()
    assert all(version in SpecifierSet(python_requires) for version in ("3.10", "3.11", "3.12", "3.13"))
    assert "3.9" not in SpecifierSet(python_requires)
    for version in ("3.10", "3.11"):
        assert str(_needed_on(requirements, version)["recbole"].specifier) == "==1.2.1"
    ours = _needed_on(requirements, "3.12")
    assert "recbole" not in ours
    recbole_s = [Requirement(line) for line in requires("recbole")]
    recbole_s = {r.name.lower(): r for r in recbole_s if r.marker is None}  # not the hyperopt extra
    assert set(recbole_s) - set(ours) == {"ray"}
    for name, requirement in recbole_s.items():
        if name != "ray":
            assert _at_least_as_narrow(ours[name].specifier, requirement.specifier), (name, ours[name], requirement)


def _at_least_as_narrow(ours, theirs):
    """Each bound of ``theirs`` (>=, ==) is met by one of ``ours`` as tight or tighter (ours may add bounds)."""
    from packaging.version import Version

    def tight(spec):
        return any(own.operator == spec.operator and (Version(own.version) >= Version(spec.version)
                                                       if spec.operator == ">=" else own.version == spec.version)
                   for own in ours)

    return all(tight(spec) for spec in theirs)


def _import_without(module):
    """Import the package in a fresh interpreter in which ``module`` cannot be imported."""
    code = f"import sys; sys.modules[{module!r}] = None; import recbole_diffusion"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=CHECKOUT)


def test_recbole_missing_says_how_to_install_it():
    result = _import_without("recbole")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()
    assert any("pip install --no-deps recbole==1.2.1" in line for line in last), result.stderr[-2000:]
    assert "needs RecBole 1.2.1, which is not installed" in result.stderr


def test_a_missing_dependency_of_recbole_is_named_as_such():
    result = _import_without("colorlog")  # recbole.utils imports it
    assert result.returncode != 0
    assert "its dependency 'colorlog' is missing" in result.stderr, result.stderr[-2000:]


def test_a_missing_dependency_of_recbole_s_evaluator_is_named_too():
    result = _import_without("sklearn")  # recbole.evaluator imports scikit-learn
    assert result.returncode != 0
    assert "its dependency 'sklearn' is missing" in result.stderr, result.stderr[-2000:]


def test_another_recbole_release_is_warned_about(monkeypatch):
    import warnings

    import recbole

    from recbole_diffusion import compat

    monkeypatch.setattr(recbole, "__version__", "1.3.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.require_recbole()
    assert any("patches RecBole 1.2.1" in str(w.message) and "1.3.0" in str(w.message) for w in caught)
