"""TF Serving's model_version_policy, apart from the server so that `vaetfx serve` checks
--version-policy while parsing its flags, before TensorFlow loads."""
import dataclasses
from typing import Iterable, Set, Tuple


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
  """TF Serving's ServableVersionPolicy: the latest N versions, all, or specific ones."""
  latest: int = 1
  all: bool = False
  specific: Tuple[int, ...] = ()

  @classmethod
  def parse(cls, text: str) -> 'VersionPolicy':
    """'latest', 'latest:N', 'all' or 'specific:V1,V2'."""
    kind, _, value = text.partition(':')
    try:
      if kind == 'latest':
        policy = cls(latest=int(value or 1))
      elif kind == 'all' and not value:
        policy = cls(all=True)
      elif kind == 'specific' and value:
        policy = cls(specific=tuple(sorted(int(v) for v in value.split(','))))
      else:
        raise ValueError(text)
    except ValueError:
      raise ValueError(f'{text!r}: expected latest, latest:N, all or specific:V1,V2') from None
    if policy.latest < 1:
      raise ValueError(f'{text!r}: latest:N needs N >= 1')
    return policy

  def aspired(self, versions: Iterable[int]) -> Set[int]:
    versions = set(versions)
    if self.all:
      return versions
    if self.specific:
      return versions & set(self.specific)
    return set(sorted(versions)[-self.latest:])
