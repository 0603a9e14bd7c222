"""One error type for serving, carrying a gRPC status code.

The server raises it with TF Serving's code and wording so clients see what
real TF Serving would answer; the client raises it with the server's answer
turned into a message a user can act on.
"""
import grpc

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# The HTTP status TF Serving's REST API answers each code with (ToHTTPStatusCode in
# model_servers/http_server.cc).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}
# An HTTP status back to the code a client can act on: the first (most common) code of each,
# and 413 for a body over the REST port's message limit.
_CODES_BY_HTTP = {**{http: code for code, http in reversed(HTTP_STATUS.items())},
                  413: grpc.StatusCode.RESOURCE_EXHAUSTED}


class ServingError(Exception):
  """A request failed with gRPC status `code`; str() is the message."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def code_from_number(number: int) -> grpc.StatusCode:
  """TensorFlow's error codes are gRPC's numbers (tensorflow/core/protobuf/error_codes.proto)."""
  return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def code_from_http(http_status: int) -> grpc.StatusCode:
  """The gRPC code behind a REST answer's HTTP status (UNKNOWN for others)."""
  return _CODES_BY_HTTP.get(http_status, grpc.StatusCode.UNKNOWN)


def invalid_argument(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.NOT_FOUND, message)
