from services.tally.server import main

main()
