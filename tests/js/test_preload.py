"""Tests for finding an app's static requires without running it, and for the worker's preload list."""

from __future__ import annotations

from vxsandbox_js import JsSandbox
from vxsandbox_js.preload import find_requires

from .helpers import js_config, make_worker


def test_plain_requires_in_order_without_duplicates():
    """Literal requires are found in order of first appearance, each once, wherever they are nested."""
    source = """
    var a = require('a');
    go.app = function () { var b = require("b"); var a2 = require('a'); }();
    """
    assert find_requires(source) == ["a", "b"]


def test_comments_and_strings_do_not_count():
    """Text that looks like a call inside comments and strings is not a require."""
    source = r"""
    // require('line-comment')
    /* require('block-comment') */
    var s = "require('in-double-quotes')", t = 'require("in-single-quotes")';
    var u = 'it\'s require("escaped")';
    var real = require('real');
    """
    assert find_requires(source) == ["real"]


def test_template_literals():
    """A template's text is not code, its substitutions are, and a plain template argument counts."""
    source = """
    var t = `require('in-template') ${require('in-substitution')} ${ {x: `nested ${require('deep')}`}.x }`;
    var p = require(`plain-template`);
    var after = require('after');
    """
    assert find_requires(source) == ["in-substitution", "deep", "plain-template", "after"]


def test_dynamic_requires_are_ignored():
    """Computed arguments, substitutions, variables and method calls named require are left alone."""
    source = """
    require('./locale/' + name);
    require(`./x/${name}`);
    require(name);
    loader.require('method');
    requireAll('not-require');
    var r = require;
    var ok = require ( 'spaced' /* a comment */ ) ;
    """
    assert find_requires(source) == ["spaced"]


def test_regular_expressions_are_skipped():
    """A regex holding quotes or require( is skipped as a regex, and division is not mistaken for one."""
    source = r"""
    var re = /require\('in-regex'\)["']/g;
    var cls = /[/'"]/;
    var half = total / 2, ratio = a / require('divided') / 3;
    if (x) { y(); } var z = require('after-block');
    """
    assert find_requires(source) == ["divided", "after-block"]


def test_unterminated_and_empty_sources():
    """Broken or empty sources give what was found before the break, never an error."""
    assert find_requires("") == []
    assert find_requires("var a = require('a'); var s = 'unterminated\n require('b')") == ["a", "b"]
    assert find_requires("require('x'") == []
    assert find_requires("/* never closed require('x')") == []


def test_default_preload_is_the_apps_requires_when_it_is_given_require():
    """With require in app_context the worker preloads the app's literal requires; without it, none."""
    app = "var lib = require('lib'); api.on_inbound_message = function () { this.done(); };"
    with_require = make_worker(JsSandbox, js_config(app, app_context="{require: require}"))
    api = with_require._template_api()
    assert with_require.preload_modules(api) == ["lib"]
    preload_arg = [a for a in with_require.sandbox_args(api) if a.startswith("--preload=")]
    assert len(preload_arg) == 1 and '"modules": ["lib"]' in preload_arg[0]
    without = make_worker(JsSandbox, js_config(app))
    assert without.preload_modules(without._template_api()) == []
    assert not [a for a in without.sandbox_args(without._template_api()) if a.startswith("--preload=")]


def test_explicit_preload_replaces_the_default():
    """A preload list is used as given, and an empty one turns preloading off."""
    app = "var lib = require('lib');"
    listed = make_worker(JsSandbox, js_config(app, app_context="{require: require}", preload=["other", "./mine"]))
    assert listed.preload_modules(listed._template_api()) == ["other", "./mine"]
    off = make_worker(JsSandbox, js_config(app, app_context="{require: require}", preload=[]))
    assert off.preload_modules(off._template_api()) == []
