"""Development tooling, installed from a checkout and by no product image: the DataHub emulator (``emulator``),
``obflow demo`` (``demo``, its processes run by ``supervise``), the load generator and its history (``loadgen``),
local databases (``localdb``) and sample change streams (``sample``). The emulator's own image,
``obflow/datahub-emulator``, is the one image that carries it."""
