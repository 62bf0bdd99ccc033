"""python -m services.reconciliation [serve|migrate]"""

from services.reconciliation.bootstrap import main

main()
