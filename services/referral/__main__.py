from services.referral.app import create_app
from services.referral.settings import ReferralSettings
from shared.serve import serve


def main() -> None:
    settings = ReferralSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
