"""The docs stay a reference: within their sizes, free of development history, and every command
shown in README.md names a module, config and flags that exist."""

import importlib.util
import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', REPO / 'CHANGELOG.md', *sorted((REPO / 'docs').rglob('*.md'))]
KIB = 1024
SIZE_LIMITS = {'README.md': 15 * KIB, 'performance.md': 30 * KIB}
DEFAULT_LIMIT = 30 * KIB

# Words that tell how the work went rather than what the product is.
HISTORY = [
    r'\brounds?\s+\d',
    r'\b(this|last|previous|next|earlier|later|latest|first|second|third|fourth|fifth|sixth|'
    r'seventh|eighth|ninth|tenth) (round|lease|session)\b',
    r'\brounds? back\b',
    r'\bleases?\b',
    r'\bsessions?\s+\d',
    r'\bwork periods?\b',
    r'\bthe issue\b',
    r'\bissues?\s+#?\d',
    r'\bCEO\b',
    r'\bengineers?\b',
    r'\bstop \d',
]

# Console commands and the modules they run.
COMMANDS = {
    'dxnet-train': 'dxnet_jax.main',
    'dxnet-evaluate': 'dxnet_jax.evaluate',
    'dxnet-denoise': 'dxnet_jax.denoise',
    'dxnet-upscale': 'dxnet_jax.upscale',
    'dxnet-models': 'dxnet_jax.models',
    'dxnet-sweep': 'dxnet_jax.sweep',
}


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_stay_within_their_size(page):
  limit = SIZE_LIMITS.get(page.name, DEFAULT_LIMIT)
  assert page.stat().st_size <= limit, f'{page.name}: {page.stat().st_size} > {limit} bytes'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_describe_the_product_not_its_history(page):
  text = page.read_text()
  found = [
      (m.group(0), text.count('\n', 0, m.start()) + 1)
      for pattern in HISTORY
      for m in re.finditer(pattern, text, re.IGNORECASE)
  ]
  assert not found, f'{page.name}: development history at {found}'


def _readme_commands():
  """Every command line of README.md's shell code blocks, continuation lines joined."""
  text = (REPO / 'README.md').read_text()
  commands = []
  for block in re.findall(r'```(?:bash|sh|shell)\n(.*?)```', text, re.S):
    block = block.replace('\\\n', ' ')
    for line in block.splitlines():
      line = line.split(' #', 1)[0].strip()
      for part in re.split(r'&&|;', line):
        part = part.strip()
        if part and not part.startswith('#'):
          commands.append(part)
  return commands


def _module_of(words):
  """(module, arguments) that a command runs, or None for a command that is not ours."""
  if words[0] in COMMANDS:
    return COMMANDS[words[0]], words[1:]
  if words[0].startswith('python') and words[1:2] == ['-m']:
    return words[2], words[3:]
  if words[0].startswith('python') and len(words) > 1 and words[1].endswith('.py'):
    return words[1], words[2:]
  return None


# Prints `python -m MODULE --help` (or `python SCRIPT --help`) for each argument, as a JSON
# object. Each runs in a fork of one Python that imported JAX, Flax and dxnet_jax first (what
# the commands import), so each pays for its own imports only, not for a fresh Python's 1 s.
HELP_SCRIPT = r"""
import json, os, runpy, sys, tempfile
import absl.app, dxnet_jax, flax.linen, jax, ml_collections, optax

texts = {}
for target in sys.argv[1:]:
  with tempfile.TemporaryFile() as out:
    pid = os.fork()
    if pid == 0:
      os.dup2(out.fileno(), 1)
      os.dup2(out.fileno(), 2)
      sys.argv = [target, '--help']
      code = 1
      try:
        if target.endswith('.py'):
          sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
          runpy.run_path(target, run_name='__main__')
        else:
          runpy.run_module(target, run_name='__main__', alter_sys=True)
        code = 0
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
      except BaseException:
        import traceback
        traceback.print_exc()
      finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.waitpid(pid, 0)
    out.seek(0)
    texts[target] = out.read().decode(errors='replace')
print(json.dumps(texts))
"""


def _helps(modules) -> dict:
  """module (or script) -> the text its `--help` prints."""
  result = subprocess.run(
      [sys.executable, '-c', HELP_SCRIPT, *modules],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  return json.loads(result.stdout)


def _load_config(config_string: str):
  sys.path.insert(0, str(REPO))
  name, _, arg = config_string.partition(':')
  spec = importlib.util.spec_from_file_location('readme_config', REPO / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _check_config_field(config, key):
  node = config
  for part in key.split('.'):
    assert part in node, f'config has no field {key}'
    node = node[part]


def _is_option(flag: str, help_text: str) -> bool:
  """Whether `--flag` is a whole option name in a --help text (argparse's `--seed SEED`, absl's
  `--seed:` and `--[no]remat` for `--remat` and `--noremat`), not the start of a longer one."""
  names = [flag[2:]]
  if flag.startswith('--no'):
    names.append(f'[no]{flag[4:]}')
  else:
    names.append(f'[no]{flag[2:]}')
  return any(re.search(rf'(?<![\w-])--{re.escape(name)}(?![\w-])', help_text) for name in names)


def test_flags_match_whole_option_names():
  help_text = 'usage: x [--seeds SEEDS] [--out-dir DIR]\n  --[no]remat: recompute\n  --json: print'
  for flag in ('--seeds', '--out-dir', '--remat', '--noremat', '--json'):
    assert _is_option(flag, help_text), flag
  for flag in ('--seed', '--out', '--rem', '--nojson', '--js'):
    assert not _is_option(flag, help_text), flag


def test_ci_runs_the_test_command_of_the_readme():
  """.ci/run runs exactly README's test command, and it lists every skip with its reason."""
  readme = (REPO / 'README.md').read_text()
  (command,) = re.findall(r'```bash\n(.*pytest.*)\n```', readme)
  ci = [
      line
      for line in (REPO / '.ci' / 'run').read_text().splitlines()
      if line.strip() and not line.startswith(('#', 'set ', 'cd '))
  ]
  assert ci == [command]
  assert '-rs' in shlex.split(command)


@pytest.mark.slow  # ~11 commands' --help: 3 s of CPU in forks of one Python (was 12 s)
def test_readme_commands_name_existing_modules_configs_and_flags():
  checked = 0
  targets = [
      (command, target)
      for command in _readme_commands()
      if (target := _module_of(shlex.split(command))) is not None
  ]
  for command, (module, _) in targets:
    if module.endswith('.py'):
      assert (REPO / module).is_file(), f'{command}: no script {module}'
    else:
      assert importlib.util.find_spec(module) is not None, f'{command}: no module {module}'
  helps = _helps(sorted({module for _, (module, _) in targets}))
  for command, (module, args) in targets:
    help_text = helps[module]
    config = None
    for i, arg in enumerate(args):
      if not arg.startswith('--'):
        continue
      flag, _, value = arg.partition('=')
      if flag in ('--config', '--study') or (flag == '--config' and not value):
        value = value or args[i + 1]
        assert (REPO / value.split(':')[0]).is_file(), f'{command}: no config {value}'
        config = _load_config(value) if flag == '--config' else config
      elif flag.startswith('--config.'):
        assert config is not None, f'{command}: {flag} before --config'
        _check_config_field(config, flag[len('--config.') :])
      else:
        assert _is_option(flag, help_text), f'{command}: {flag} is not an option of {module}'
    checked += 1
  assert checked >= 5
