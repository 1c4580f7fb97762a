from services.audit.app import create_app
from services.audit.settings import AuditSettings
from shared.serve import serve


def main() -> None:
    settings = AuditSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
