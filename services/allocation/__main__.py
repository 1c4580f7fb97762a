from services.allocation.app import create_app
from services.allocation.settings import AllocationSettings
from shared.serve import serve


def main() -> None:
    settings = AllocationSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
