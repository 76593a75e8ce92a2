"""Personal data never leaves the machine: local detection and reversible, consistent pseudonyms.

    from smallfleet.privacy import Pseudonymizer
    pz = Pseudonymizer()
    red = pz.redact("Mail jane.doe@example.com about Jane Doe's refund")
    red.text        # 'Mail <EMAIL_ADDRESS_1> about <PERSON_1>'s refund'
    pz.restore(red.text).text  # the original again
"""

from .detector import Detector, chunk_text
from .entities import ENTITY_TYPES, Entity
from .pseudonymize import PLACEHOLDER, Pseudonymizer, Redaction, Restoration, StreamRestorer
from .vault import Vault, new_key

__all__ = ["ENTITY_TYPES", "PLACEHOLDER", "Detector", "Entity", "Pseudonymizer", "Redaction", "Restoration",
           "StreamRestorer", "Vault", "chunk_text", "new_key"]
