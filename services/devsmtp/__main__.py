from services.devsmtp.server import main

main()
