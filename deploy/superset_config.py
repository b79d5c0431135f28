# Superset config for docker-compose.yml (mounted into /app/pythonpath/).
import os

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = "sqlite:////app/superset_home/superset.db"
# rollcall reads /api/v1/security/users/, which only exists with the security REST API on.
FAB_ADD_SECURITY_API = True
