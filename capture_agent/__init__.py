"""CDC capture: OceanBase (Oracle or MySQL mode), MySQL and MariaDB changes to DataHub (issue 4)."""
