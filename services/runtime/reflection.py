"""Server reflection in both versions clients ask for: `grpc.reflection.v1` (current grpcurl,
Postman, grpcui, Envoy tooling) and the older `grpc.reflection.v1alpha`.

grpcio-reflection implements only v1alpha (1.85.1, the newest release, included). v1 is the same
protocol under a new package name: the same messages, fields and field numbers, so v1alpha's
servicer answers v1 calls too, its messages being byte-for-byte valid v1 messages; it is
registered a second time under the v1 service name. For clients that then ask about the reflection
service itself, v1alpha's descriptor, renamed to v1, is added to the default descriptor pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> list[str]:
    """Serve reflection v1 and v1alpha listing `service_names` and both reflection services;
    returns the names listed."""
    names = [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
    add_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(V1_SERVICE_NAME, handlers)
    return names


def add_v1_descriptor() -> None:
    """Put grpc/reflection/v1/reflection.proto into the default pool (once), built from v1alpha's."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    alpha_prefix = f".{file.package}."
    file.name, file.package = _V1_FILE, V1_PACKAGE
    file.ClearField("options")  # v1alpha's are Java/Go package names and `deprecated`

    def renamed(type_name: str) -> str:
        return f".{V1_PACKAGE}.{type_name.removeprefix(alpha_prefix)}"

    for message in file.message_type:  # v1alpha has no nested messages
        for field in message.field:
            if field.type_name.startswith(alpha_prefix):  # message fields; scalars have none
                field.type_name = renamed(field.type_name)
    for service in file.service:
        for method in service.method:
            method.input_type, method.output_type = renamed(method.input_type), renamed(method.output_type)
    pool.Add(file)
