from services.platform import main

main()
