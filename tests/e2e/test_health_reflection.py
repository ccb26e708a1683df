"""Standard gRPC tooling: the health-checking protocol (Kubernetes probes) and reflection."""
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_grpc_health_check_serving(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reply = stub.Check(health_pb2.HealthCheckRequest(service="vitserve.v1.Vision"), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services_and_resolves_files(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(stub.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="vitserve.v1.Vision"),
        ]), timeout=10))
    services = {s.name for s in responses[0].list_services_response.service}
    assert {"vitserve.v1.Vision", "inference.GRPCInferenceService",
            "grpc.health.v1.Health"} <= services
    assert responses[1].file_descriptor_response.file_descriptor_proto
