"""larpanda.tasks"""
