from services.reporting.app import create_app
from services.reporting.settings import ReportingSettings
from shared.serve import serve


def main() -> None:
    settings = ReportingSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
