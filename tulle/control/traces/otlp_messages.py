"""OTLP's trace messages (opentelemetry-proto 1.45's ``common``, ``resource``, ``trace`` and
``collector/trace`` files), built from their serialized descriptors in a descriptor pool of
Tulle's own.

Why not ``import opentelemetry.proto...``: xds-protos (the xDS messages Tulle needs) ships an
older copy of the same modules at the same paths (``opentelemetry/proto/trace/v1/trace_pb2.py``
without ``ScopeSpans``), and whichever of the two packages pip installs last owns those files: a
clean install imported the old ones. Here the descriptors are opentelemetry-proto's own
(generated code: ``FileDescriptor.serialized_pb`` of its modules, base64), and a private pool
keeps them apart from the old copy that Envoy's tracing protos may load into the default pool.
To refresh them from another opentelemetry-proto, print ``module.DESCRIPTOR.serialized_pb`` of
those four modules from an environment where that package was installed last.

Nothing here touches the data plane, which writes OTLP itself (:mod:`tulle.obs.otlp`)."""

from __future__ import annotations

import base64

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

_COMMON = (
    "CipvcGVudGVsZW1ldHJ5L3Byb3RvL2NvbW1vbi92MS9jb21tb24ucHJvdG8SHW9wZW50ZWxlbWV0cnkucHJvdG8u"
    "Y29tbW9uLnYxIq0CCghBbnlWYWx1ZRIWCgxzdHJpbmdfdmFsdWUYASABKAlIABIUCgpib29sX3ZhbHVlGAIgASgI"
    "SAASEwoJaW50X3ZhbHVlGAMgASgDSAASFgoMZG91YmxlX3ZhbHVlGAQgASgBSAASQAoLYXJyYXlfdmFsdWUYBSAB"
    "KAsyKS5vcGVudGVsZW1ldHJ5LnByb3RvLmNvbW1vbi52MS5BcnJheVZhbHVlSAASQwoMa3ZsaXN0X3ZhbHVlGAYg"
    "ASgLMisub3BlbnRlbGVtZXRyeS5wcm90by5jb21tb24udjEuS2V5VmFsdWVMaXN0SAASFQoLYnl0ZXNfdmFsdWUY"
    "ByABKAxIABIfChVzdHJpbmdfdmFsdWVfc3RyaW5kZXgYCCABKAVIAEIHCgV2YWx1ZSJFCgpBcnJheVZhbHVlEjcK"
    "BnZhbHVlcxgBIAMoCzInLm9wZW50ZWxlbWV0cnkucHJvdG8uY29tbW9uLnYxLkFueVZhbHVlIkcKDEtleVZhbHVl"
    "TGlzdBI3CgZ2YWx1ZXMYASADKAsyJy5vcGVudGVsZW1ldHJ5LnByb3RvLmNvbW1vbi52MS5LZXlWYWx1ZSJlCghL"
    "ZXlWYWx1ZRILCgNrZXkYASABKAkSNgoFdmFsdWUYAiABKAsyJy5vcGVudGVsZW1ldHJ5LnByb3RvLmNvbW1vbi52"
    "MS5BbnlWYWx1ZRIUCgxrZXlfc3RyaW5kZXgYAyABKAUilAEKFEluc3RydW1lbnRhdGlvblNjb3BlEgwKBG5hbWUY"
    "ASABKAkSDwoHdmVyc2lvbhgCIAEoCRI7CgphdHRyaWJ1dGVzGAMgAygLMicub3BlbnRlbGVtZXRyeS5wcm90by5j"
    "b21tb24udjEuS2V5VmFsdWUSIAoYZHJvcHBlZF9hdHRyaWJ1dGVzX2NvdW50GAQgASgNIlgKCUVudGl0eVJlZhIS"
    "CgpzY2hlbWFfdXJsGAEgASgJEgwKBHR5cGUYAiABKAkSDwoHaWRfa2V5cxgDIAMoCRIYChBkZXNjcmlwdGlvbl9r"
    "ZXlzGAQgAygJQnsKIGlvLm9wZW50ZWxlbWV0cnkucHJvdG8uY29tbW9uLnYxQgtDb21tb25Qcm90b1ABWihnby5v"
    "cGVudGVsZW1ldHJ5LmlvL3Byb3RvL290bHAvY29tbW9uL3YxqgIdT3BlblRlbGVtZXRyeS5Qcm90by5Db21tb24u"
    "VjFiBnByb3RvMw=="
)
_RESOURCE = (
    "Ci5vcGVudGVsZW1ldHJ5L3Byb3RvL3Jlc291cmNlL3YxL3Jlc291cmNlLnByb3RvEh9vcGVudGVsZW1ldHJ5LnBy"
    "b3RvLnJlc291cmNlLnYxGipvcGVudGVsZW1ldHJ5L3Byb3RvL2NvbW1vbi92MS9jb21tb24ucHJvdG8iqAEKCFJl"
    "c291cmNlEjsKCmF0dHJpYnV0ZXMYASADKAsyJy5vcGVudGVsZW1ldHJ5LnByb3RvLmNvbW1vbi52MS5LZXlWYWx1"
    "ZRIgChhkcm9wcGVkX2F0dHJpYnV0ZXNfY291bnQYAiABKA0SPQoLZW50aXR5X3JlZnMYAyADKAsyKC5vcGVudGVs"
    "ZW1ldHJ5LnByb3RvLmNvbW1vbi52MS5FbnRpdHlSZWZCgwEKImlvLm9wZW50ZWxlbWV0cnkucHJvdG8ucmVzb3Vy"
    "Y2UudjFCDVJlc291cmNlUHJvdG9QAVoqZ28ub3BlbnRlbGVtZXRyeS5pby9wcm90by9vdGxwL3Jlc291cmNlL3Yx"
    "qgIfT3BlblRlbGVtZXRyeS5Qcm90by5SZXNvdXJjZS5WMWIGcHJvdG8z"
)
_TRACE = (
    "CihvcGVudGVsZW1ldHJ5L3Byb3RvL3RyYWNlL3YxL3RyYWNlLnByb3RvEhxvcGVudGVsZW1ldHJ5LnByb3RvLnRy"
    "YWNlLnYxGipvcGVudGVsZW1ldHJ5L3Byb3RvL2NvbW1vbi92MS9jb21tb24ucHJvdG8aLm9wZW50ZWxlbWV0cnkv"
    "cHJvdG8vcmVzb3VyY2UvdjEvcmVzb3VyY2UucHJvdG8iUQoKVHJhY2VzRGF0YRJDCg5yZXNvdXJjZV9zcGFucxgB"
    "IAMoCzIrLm9wZW50ZWxlbWV0cnkucHJvdG8udHJhY2UudjEuUmVzb3VyY2VTcGFucyKnAQoNUmVzb3VyY2VTcGFu"
    "cxI7CghyZXNvdXJjZRgBIAEoCzIpLm9wZW50ZWxlbWV0cnkucHJvdG8ucmVzb3VyY2UudjEuUmVzb3VyY2USPQoL"
    "c2NvcGVfc3BhbnMYAiADKAsyKC5vcGVudGVsZW1ldHJ5LnByb3RvLnRyYWNlLnYxLlNjb3BlU3BhbnMSEgoKc2No"
    "ZW1hX3VybBgDIAEoCUoGCOgHEOkHIpcBCgpTY29wZVNwYW5zEkIKBXNjb3BlGAEgASgLMjMub3BlbnRlbGVtZXRy"
    "eS5wcm90by5jb21tb24udjEuSW5zdHJ1bWVudGF0aW9uU2NvcGUSMQoFc3BhbnMYAiADKAsyIi5vcGVudGVsZW1l"
    "dHJ5LnByb3RvLnRyYWNlLnYxLlNwYW4SEgoKc2NoZW1hX3VybBgDIAEoCSKECAoEU3BhbhIQCgh0cmFjZV9pZBgB"
    "IAEoDBIPCgdzcGFuX2lkGAIgASgMEhMKC3RyYWNlX3N0YXRlGAMgASgJEhYKDnBhcmVudF9zcGFuX2lkGAQgASgM"
    "Eg0KBWZsYWdzGBAgASgHEgwKBG5hbWUYBSABKAkSOQoEa2luZBgGIAEoDjIrLm9wZW50ZWxlbWV0cnkucHJvdG8u"
    "dHJhY2UudjEuU3Bhbi5TcGFuS2luZBIcChRzdGFydF90aW1lX3VuaXhfbmFubxgHIAEoBhIaChJlbmRfdGltZV91"
    "bml4X25hbm8YCCABKAYSOwoKYXR0cmlidXRlcxgJIAMoCzInLm9wZW50ZWxlbWV0cnkucHJvdG8uY29tbW9uLnYx"
    "LktleVZhbHVlEiAKGGRyb3BwZWRfYXR0cmlidXRlc19jb3VudBgKIAEoDRI4CgZldmVudHMYCyADKAsyKC5vcGVu"
    "dGVsZW1ldHJ5LnByb3RvLnRyYWNlLnYxLlNwYW4uRXZlbnQSHAoUZHJvcHBlZF9ldmVudHNfY291bnQYDCABKA0S"
    "NgoFbGlua3MYDSADKAsyJy5vcGVudGVsZW1ldHJ5LnByb3RvLnRyYWNlLnYxLlNwYW4uTGluaxIbChNkcm9wcGVk"
    "X2xpbmtzX2NvdW50GA4gASgNEjQKBnN0YXR1cxgPIAEoCzIkLm9wZW50ZWxlbWV0cnkucHJvdG8udHJhY2UudjEu"
    "U3RhdHVzGowBCgVFdmVudBIWCg50aW1lX3VuaXhfbmFubxgBIAEoBhIMCgRuYW1lGAIgASgJEjsKCmF0dHJpYnV0"
    "ZXMYAyADKAsyJy5vcGVudGVsZW1ldHJ5LnByb3RvLmNvbW1vbi52MS5LZXlWYWx1ZRIgChhkcm9wcGVkX2F0dHJp"
    "YnV0ZXNfY291bnQYBCABKA0arAEKBExpbmsSEAoIdHJhY2VfaWQYASABKAwSDwoHc3Bhbl9pZBgCIAEoDBITCgt0"
    "cmFjZV9zdGF0ZRgDIAEoCRI7CgphdHRyaWJ1dGVzGAQgAygLMicub3BlbnRlbGVtZXRyeS5wcm90by5jb21tb24u"
    "djEuS2V5VmFsdWUSIAoYZHJvcHBlZF9hdHRyaWJ1dGVzX2NvdW50GAUgASgNEg0KBWZsYWdzGAYgASgHIpkBCghT"
    "cGFuS2luZBIZChVTUEFOX0tJTkRfVU5TUEVDSUZJRUQQABIWChJTUEFOX0tJTkRfSU5URVJOQUwQARIUChBTUEFO"
    "X0tJTkRfU0VSVkVSEAISFAoQU1BBTl9LSU5EX0NMSUVOVBADEhYKElNQQU5fS0lORF9QUk9EVUNFUhAEEhYKElNQ"
    "QU5fS0lORF9DT05TVU1FUhAFIq4BCgZTdGF0dXMSDwoHbWVzc2FnZRgCIAEoCRI9CgRjb2RlGAMgASgOMi8ub3Bl"
    "bnRlbGVtZXRyeS5wcm90by50cmFjZS52MS5TdGF0dXMuU3RhdHVzQ29kZSJOCgpTdGF0dXNDb2RlEhUKEVNUQVRV"
    "U19DT0RFX1VOU0VUEAASEgoOU1RBVFVTX0NPREVfT0sQARIVChFTVEFUVVNfQ09ERV9FUlJPUhACSgQIARACKpwB"
    "CglTcGFuRmxhZ3MSGQoVU1BBTl9GTEFHU19ET19OT1RfVVNFEAASIAobU1BBTl9GTEFHU19UUkFDRV9GTEFHU19N"
    "QVNLEP8BEioKJVNQQU5fRkxBR1NfQ09OVEVYVF9IQVNfSVNfUkVNT1RFX01BU0sQgAISJgohU1BBTl9GTEFHU19D"
    "T05URVhUX0lTX1JFTU9URV9NQVNLEIAEQncKH2lvLm9wZW50ZWxlbWV0cnkucHJvdG8udHJhY2UudjFCClRyYWNl"
    "UHJvdG9QAVonZ28ub3BlbnRlbGVtZXRyeS5pby9wcm90by9vdGxwL3RyYWNlL3YxqgIcT3BlblRlbGVtZXRyeS5Q"
    "cm90by5UcmFjZS5WMWIGcHJvdG8z"
)
_TRACE_SERVICE = (
    "CjpvcGVudGVsZW1ldHJ5L3Byb3RvL2NvbGxlY3Rvci90cmFjZS92MS90cmFjZV9zZXJ2aWNlLnByb3RvEiZvcGVu"
    "dGVsZW1ldHJ5LnByb3RvLmNvbGxlY3Rvci50cmFjZS52MRoob3BlbnRlbGVtZXRyeS9wcm90by90cmFjZS92MS90"
    "cmFjZS5wcm90byJgChlFeHBvcnRUcmFjZVNlcnZpY2VSZXF1ZXN0EkMKDnJlc291cmNlX3NwYW5zGAEgAygLMisu"
    "b3BlbnRlbGVtZXRyeS5wcm90by50cmFjZS52MS5SZXNvdXJjZVNwYW5zIngKGkV4cG9ydFRyYWNlU2VydmljZVJl"
    "c3BvbnNlEloKD3BhcnRpYWxfc3VjY2VzcxgBIAEoCzJBLm9wZW50ZWxlbWV0cnkucHJvdG8uY29sbGVjdG9yLnRy"
    "YWNlLnYxLkV4cG9ydFRyYWNlUGFydGlhbFN1Y2Nlc3MiSgoZRXhwb3J0VHJhY2VQYXJ0aWFsU3VjY2VzcxIWCg5y"
    "ZWplY3RlZF9zcGFucxgBIAEoAxIVCg1lcnJvcl9tZXNzYWdlGAIgASgJMqIBCgxUcmFjZVNlcnZpY2USkQEKBkV4"
    "cG9ydBJBLm9wZW50ZWxlbWV0cnkucHJvdG8uY29sbGVjdG9yLnRyYWNlLnYxLkV4cG9ydFRyYWNlU2VydmljZVJl"
    "cXVlc3QaQi5vcGVudGVsZW1ldHJ5LnByb3RvLmNvbGxlY3Rvci50cmFjZS52MS5FeHBvcnRUcmFjZVNlcnZpY2VS"
    "ZXNwb25zZSIAQpwBCilpby5vcGVudGVsZW1ldHJ5LnByb3RvLmNvbGxlY3Rvci50cmFjZS52MUIRVHJhY2VTZXJ2"
    "aWNlUHJvdG9QAVoxZ28ub3BlbnRlbGVtZXRyeS5pby9wcm90by9vdGxwL2NvbGxlY3Rvci90cmFjZS92MaoCJk9w"
    "ZW5UZWxlbWV0cnkuUHJvdG8uQ29sbGVjdG9yLlRyYWNlLlYxYgZwcm90bzM="
)


POOL = descriptor_pool.DescriptorPool()
for _encoded in (_COMMON, _RESOURCE, _TRACE, _TRACE_SERVICE):  # dependencies first
    POOL.AddSerializedFile(base64.b64decode(_encoded))


def _message(name: str) -> type[Message]:
    built: type[Message] = message_factory.GetMessageClass(POOL.FindMessageTypeByName(name))
    return built


_COLLECTOR = "opentelemetry.proto.collector.trace.v1"
ExportTraceServiceRequest = _message(f"{_COLLECTOR}.ExportTraceServiceRequest")
ExportTraceServiceResponse = _message(f"{_COLLECTOR}.ExportTraceServiceResponse")
ResourceSpans = _message("opentelemetry.proto.trace.v1.ResourceSpans")
ScopeSpans = _message("opentelemetry.proto.trace.v1.ScopeSpans")
Span = _message("opentelemetry.proto.trace.v1.Span")
Status = _message("opentelemetry.proto.trace.v1.Status")
Resource = _message("opentelemetry.proto.resource.v1.Resource")
KeyValue = _message("opentelemetry.proto.common.v1.KeyValue")
AnyValue = _message("opentelemetry.proto.common.v1.AnyValue")
ArrayValue = _message("opentelemetry.proto.common.v1.ArrayValue")
InstrumentationScope = _message("opentelemetry.proto.common.v1.InstrumentationScope")

EXPORT_METHOD = f"/{_COLLECTOR}.TraceService/Export"
"""The gRPC method a collector serves (OTLP/gRPC)."""
