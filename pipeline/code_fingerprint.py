"""A fingerprint of the code each component runs, so that editing it invalidates TFX's cache.

TFX's cache key (tfx/orchestration/portable/cache_utils.py) hashes a
component's execution properties as strings and reads a file's content only for
a property named `module_file`. This pipeline names its code by dotted paths
(`vaetfx.models.trainer.run_fn`, a TFMA metric module, custom executor
classes), so without help an edit to models/vae.py would bring the old Trainer
back from the cache. The runner computes, once per run, a SHA-256 of the source
of each component's entry module and of every `vaetfx` module it imports,
directly or not, and create_pipeline() puts it among that component's execution
properties: changed code, changed cache key, and on Kubeflow a changed task
spec, which is what KFP caches on.

The files are found through Python's import system, so the fingerprint is of
the code that would run: the installed package (editable or not) on this
machine. On Kubeflow that is the compiling machine; the image must be built
from the same source, as the README says.
"""
import ast
import hashlib
import importlib.util
from typing import Dict, Iterable, List, Mapping, Set

PACKAGE = 'vaetfx'
# The modules whose code each component runs; what they import is followed from there.
ENTRY_MODULES = {
    # Its driver fingerprints the input files: a change to how is a change to the cache key.
    'MnistExampleGen': (f'{PACKAGE}.components.mnist_example_gen.executor',
                        f'{PACKAGE}.components.mnist_example_gen.driver'),
    'Transform': (f'{PACKAGE}.models.preprocessing',
                  f'{PACKAGE}.components.span_transform.executor'),
    'Trainer': (f'{PACKAGE}.models.trainer',),
    'WarmStartBase': (f'{PACKAGE}.components.warm_start_base.executor',),
    # The Evaluator runs the SavedModel (a changed model is a new Model artifact
    # already) and the TFMA metric module, which is Python.
    'Evaluator': (f'{PACKAGE}.models.score_metrics',
                  f'{PACKAGE}.components.served_baseline.executor'),
    # Its driver reads the serving folder when it runs; so does the Pusher's.
    'ServedModelImporter': (f'{PACKAGE}.components.served_baseline.executor',
                            f'{PACKAGE}.components.served_state_driver'),
    # The validator runs the server in a child process (its child module, imported by the
    # executor's, starts serving.server): the server is its code too.
    # Its driver finds the previous span in ML Metadata.
    'DriftCheck': (f'{PACKAGE}.components.drift_check.executor',
                   f'{PACKAGE}.components.drift_check.driver'),
    'ServingInfraValidator': (f'{PACKAGE}.components.serving_infra_validator.executor',),
    'VaeReport': (f'{PACKAGE}.components.vae_report.executor',),
    # The AnomalyScorer, under the id TFX's BulkInferrer had.
    'BulkInferrer': (f'{PACKAGE}.components.anomaly_scorer.executor',),
    'AtomicPusher': (f'{PACKAGE}.components.atomic_pusher.executor',
                     f'{PACKAGE}.components.atomic_pusher.driver'),
}
# Components that run only TFX's own code (a TFX upgrade is a new pipeline IR already).
STOCK_COMPONENTS = ('StatisticsGen', 'SchemaGen', 'ExampleValidator')
# Resolvers have no cache key of their own: what they resolve is the consumer's inputs, which
# are in its cache key (the rolling window's components/span_window.py).
RESOLVERS = ('SpanWindow',)


def _spec(module: str):
  """importlib's spec of `module`, or None; imports only the packages above it, never a
  plain module (`from vaetfx.models.hparams import TrainingHparams` names no module)."""
  parent = module.rpartition('.')[0]
  if parent:
    parent_spec = _spec(parent)
    if parent_spec is None or parent_spec.submodule_search_locations is None:
      return None
  return importlib.util.find_spec(module)


def source_file(module: str) -> str:
  """The file Python would execute for `module`."""
  spec = _spec(module)
  if spec is None or not spec.has_location:
    raise ModuleNotFoundError(f'{module}: no source file found to fingerprint')
  return spec.origin


def _import_nodes(tree: ast.AST, into_functions: bool):
  """The Import/ImportFrom nodes of `tree`, with or without those inside function bodies."""
  for node in ast.iter_child_nodes(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    elif into_functions or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield from _import_nodes(node, into_functions)


def _imported_package_modules(module: str, path: str) -> Set[str]:
  """Modules of PACKAGE that `module`'s source imports, read from its syntax tree.

  A module's imports inside functions count (commands import lazily, then call).
  A package's __init__.py runs whenever one of its modules is imported, but the
  imports inside its functions (a lazy module __getattr__) only when called, so
  those are left out: vaetfx/__init__.py's lazy VaeReport import would otherwise
  make every component's fingerprint cover the report's code.
  """
  with open(path, 'rb') as f:
    tree = ast.parse(f.read(), filename=path)
  is_package = path.endswith('__init__.py')
  package = module if is_package else module.rpartition('.')[0]
  names = set()
  for node in _import_nodes(tree, into_functions=not is_package):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = importlib.util.resolve_name('.' * node.level + (node.module or ''), package)
      # `from vaetfx.models import vae` imports a module, `from ...hparams import X` a name.
      names.update([base, *(f'{base}.{alias.name}' for alias in node.names)])
  return {name for name in names
          if (name == PACKAGE or name.startswith(f'{PACKAGE}.')) and _spec(name) is not None}


def _with_parent_packages(module: str) -> List[str]:
  """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
  parts = module.split('.')
  return ['.'.join(parts[:i]) for i in range(1, len(parts) + 1)]


def module_closure(*entry_modules: str) -> Dict[str, str]:
  """The entry modules and every PACKAGE module they import, transitively: {module: source file}."""
  found: Dict[str, str] = {}
  pending = list(entry_modules)
  while pending:
    for module in _with_parent_packages(pending.pop()):
      if module in found:
        continue
      found[module] = source_file(module)
      pending.extend(_imported_package_modules(module, found[module]) - set(found))
  return found


def fingerprint(sources: Dict[str, str]) -> str:
  """SHA-256 over each module's name and source bytes, in name order: a path change alone
  (editable vs installed) does not change it, an edit to any byte does."""
  digest = hashlib.sha256()
  for module in sorted(sources):
    with open(sources[module], 'rb') as f:
      content = f.read()
    digest.update(f'{module}\0{len(content)}\0'.encode())
    digest.update(content)
  return digest.hexdigest()


def check_covered(component_ids: Iterable[str], fingerprints: Mapping[str, str]) -> None:
  """Raises ValueError naming each component that runs our code but has no fingerprint: TFX's
  cache would serve its old results after an edit to that code."""
  missing = sorted(set(component_ids) - set(fingerprints) - set(STOCK_COMPONENTS)
                   - set(RESOLVERS))
  if missing:
    raise ValueError(f'no code fingerprint for {", ".join(missing)}: add the modules it runs '
                     'to code_fingerprint.ENTRY_MODULES')


def component_fingerprints(components: Iterable[str] = tuple(ENTRY_MODULES)) -> Dict[str, str]:
  """{component id: fingerprint of the code it runs}, for create_pipeline(code_fingerprints=...)."""
  return {component: fingerprint(module_closure(*ENTRY_MODULES[component]))
          for component in components}
