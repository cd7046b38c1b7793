from services.signing.server import main

main()
