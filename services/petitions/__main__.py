from services.petitions.server import main

main()
