"""Checks shared by the config dataclasses and the command line: what a numeric field allows.

A field of a config dataclass keeps its allowed values in its metadata ('range'
or 'choices'); the dataclass checks them when it is built (check_fields), and
the field's flag (vaetfx/flags.py) parses with the same bounds and words, so
the two cannot drift apart. Free of TensorFlow and TFX: the command line checks
flags before it loads either.
"""
import dataclasses
import math
import typing


@dataclasses.dataclass(frozen=True)
class Range:
  """The values a numeric field allows, kept in the field's metadata (key 'range'): the
  dataclass checks them, and the field's command-line flag (vaetfx/flags.py) parses with the
  same bounds and words, so the two cannot drift apart."""
  minimum: float = -math.inf
  maximum: float = math.inf
  above: bool = False  # The minimum itself is excluded.
  whole: bool = False

  def describe(self) -> str:
    if self.whole:
      return (f'a whole number from {self.minimum} to {self.maximum}'
              if self.maximum != math.inf else f'a whole number >= {self.minimum}')
    if self.minimum == -math.inf:
      return 'a finite number'
    if self.maximum != math.inf:
      return f'a number from {self.minimum:g} to {self.maximum:g}'
    return f'a finite number {">" if self.above else ">="} {self.minimum:g}'

  def contains(self, value) -> bool:
    if self.whole and (isinstance(value, bool) or not isinstance(value, int)):
      return False
    return (math.isfinite(value) and self.minimum <= value <= self.maximum
            and not (self.above and value == self.minimum))


@dataclasses.dataclass(frozen=True)
class PowersOfTen:
  """1, 10, 100, ...: a Range's interface, for the report's largest number of samples."""
  whole = True

  def describe(self) -> str:
    return 'a power of ten: 1, 10, 100, 1000, ...'

  def contains(self, value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 1
            and 10 ** round(math.log10(value)) == value)


WHOLE_POSITIVE = Range(1, whole=True)
WHOLE_NON_NEGATIVE = Range(0, whole=True)


def check_fields(instance):
  """Raises ValueError naming the first field of a dataclass instance outside its 'choices'
  or 'range' metadata."""
  for field in dataclasses.fields(instance):
    value = getattr(instance, field.name)
    if value is None and value_type(field) is not field.type:  # Optional, and left out.
      continue
    choices = field.metadata.get('choices')
    if choices and value not in choices:
      raise ValueError(f'{field.name}={value!r}: expected one of {choices}')
    allowed = field.metadata.get('range')
    if allowed and value is not None and not allowed.contains(value):
      raise ValueError(f'{field.name}={value!r}: expected {allowed.describe()}')


def value_type(field: dataclasses.Field) -> type:
  """The type of a field's values: X for Optional[X], whose None means "the model's default"."""
  return next((t for t in typing.get_args(field.type) if t is not type(None)), field.type)
