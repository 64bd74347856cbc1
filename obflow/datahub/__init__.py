"""Everything that talks to Alibaba Cloud DataHub, always through the official ``pydatahub`` SDK.

``client`` builds the SDK client and the change topic, ``producer`` ships envelopes (capture),
``consumer`` reads them back (the Flink source). The local DataHub-compatible server is development tooling:
``obflow_dev.emulator``.
"""
