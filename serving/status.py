"""One error type for serving, carrying a gRPC status code.

The server raises it with TF Serving's code and wording so clients see what
real TF Serving would answer; the client raises it with the server's answer
turned into a message a user can act on.
"""
import grpc

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
  """A request failed with gRPC status `code`; str() is the message."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def code_from_number(number: int) -> grpc.StatusCode:
  """TensorFlow's error codes are gRPC's numbers (tensorflow/core/protobuf/error_codes.proto)."""
  return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def invalid_argument(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.NOT_FOUND, message)
